//! cairnctl: parses flags, runs the command, maps the outcome to an exit code.

fn main() -> std::process::ExitCode {
    cairn_ctl::main()
}
