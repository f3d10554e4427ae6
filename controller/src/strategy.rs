//! Strategy and schedule selection (SPEC INT-5, INT-7): seed 000's decision
//! matrix and schedule table as one pure function, with the reason in words.
//!
//! Size classes (INT-4): small < 100 MB, medium < 1 GB, large ≥ 1 GB, after
//! excludes. Activity (INT-2): files changed in the last 24 h; high ≥ 100,
//! medium 20–99, low < 20.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeClass {
    Small,
    Medium,
    Large,
}

impl SizeClass {
    pub fn of(bytes: u64) -> SizeClass {
        const MB: u64 = 1_000_000;
        match bytes {
            b if b < 100 * MB => SizeClass::Small,
            b if b < 1000 * MB => SizeClass::Medium,
            _ => SizeClass::Large,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activity {
    High,
    Medium,
    Low,
}

impl Activity {
    /// From the number of files changed in the last 24 hours.
    pub fn of(changes_per_day: u64) -> Activity {
        match changes_per_day {
            c if c >= 100 => Activity::High,
            c if c >= 20 => Activity::Medium,
            _ => Activity::Low,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Full backups only.
    Full,
    /// Incremental runs plus a weekly full.
    Incremental,
    /// Weekly full + daily incremental (large, busy sites).
    Mixed,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Full => "full",
            Strategy::Incremental => "incremental",
            Strategy::Mixed => "mixed",
        }
    }
}

impl SizeClass {
    pub fn as_str(self) -> &'static str {
        match self {
            SizeClass::Small => "small",
            SizeClass::Medium => "medium",
            SizeClass::Large => "large",
        }
    }
}

impl Activity {
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::High => "high",
            Activity::Medium => "medium",
            Activity::Low => "low",
        }
    }
}

/// One scheduled run: a cron expression (minute hour dom month dow) and the
/// backup kind it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub cron: String,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    pub strategy: Strategy,
    pub runs: Vec<Run>,
    pub reason: String,
}

const EVERY_6_HOURS: &str = "0 */6 * * *";
const DAILY_3AM: &str = "0 3 * * *";
const WEEKLY_SUNDAY_3AM: &str = "0 3 * * 0";

fn run(cron: &str, kind: &str) -> Run {
    Run {
        cron: cron.into(),
        kind: kind.into(),
    }
}

/// Seed 000's decision matrix (strategy from size × activity) and schedule
/// table (frequency from activity; the mixed strategy has its own row).
pub fn recommend(size: SizeClass, activity: Activity) -> Recommendation {
    use Activity as A;
    use SizeClass as S;
    let strategy = match (size, activity) {
        (S::Small, _) => Strategy::Full,
        (S::Medium, A::High) => Strategy::Incremental,
        (S::Medium, _) => Strategy::Full,
        (S::Large, A::High) => Strategy::Mixed,
        (S::Large, A::Medium) => Strategy::Incremental,
        (S::Large, A::Low) => Strategy::Full,
    };
    let every = match activity {
        A::High => EVERY_6_HOURS,
        A::Medium => DAILY_3AM,
        A::Low => WEEKLY_SUNDAY_3AM,
    };
    let runs = match strategy {
        Strategy::Full => vec![run(every, "full")],
        Strategy::Incremental => vec![run(every, "incremental"), run(WEEKLY_SUNDAY_3AM, "full")],
        Strategy::Mixed => vec![
            run(DAILY_3AM, "incremental"),
            run(WEEKLY_SUNDAY_3AM, "full"),
        ],
    };
    let (size_word, activity_word) = (size.as_str(), activity.as_str());
    let how = match strategy {
        Strategy::Full if size == S::Small => {
            format!(
                "full {}: a small site backs up whole quickly",
                schedule_words(every)
            )
        }
        Strategy::Full => format!("full, {}", schedule_words(every)),
        Strategy::Incremental => format!("incremental {} + weekly full", schedule_words(every)),
        Strategy::Mixed => "mixed: weekly full + daily incremental".to_string(),
    };
    Recommendation {
        strategy,
        runs,
        reason: format!("{size_word}, {activity_word} activity → {how}"),
    }
}

fn schedule_words(cron: &str) -> &'static str {
    match cron {
        EVERY_6_HOURS => "every 6 hours",
        DAILY_3AM => "daily at 03:00",
        _ => "weekly on Sunday at 03:00",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Activity as A;
    use SizeClass as S;

    /// Seed 000's decision matrix, cell by cell.
    #[test]
    fn decision_matrix_matches_seed_000() {
        let matrix = [
            (
                A::High,
                [Strategy::Full, Strategy::Incremental, Strategy::Mixed],
            ),
            (
                A::Medium,
                [Strategy::Full, Strategy::Full, Strategy::Incremental],
            ),
            (A::Low, [Strategy::Full, Strategy::Full, Strategy::Full]),
        ];
        for (activity, row) in matrix {
            for (size, want) in [S::Small, S::Medium, S::Large].into_iter().zip(row) {
                assert_eq!(
                    recommend(size, activity).strategy,
                    want,
                    "{size:?} × {activity:?}"
                );
            }
        }
    }

    /// Seed 000's schedule table: High/any every 6 hours, Medium daily 3 AM,
    /// Low weekly Sunday 3 AM, Mixed/large daily incremental + weekly full.
    #[test]
    fn schedule_table_matches_seed_000() {
        for size in [S::Small, S::Medium] {
            assert_eq!(recommend(size, A::High).runs[0].cron, "0 */6 * * *");
        }
        for size in [S::Small, S::Medium, S::Large] {
            assert_eq!(recommend(size, A::Medium).runs[0].cron, "0 3 * * *");
            assert_eq!(recommend(size, A::Low).runs[0].cron, "0 3 * * 0");
        }
        let mixed = recommend(S::Large, A::High);
        assert_eq!(mixed.strategy, Strategy::Mixed);
        assert_eq!(
            mixed.runs,
            vec![run("0 3 * * *", "incremental"), run("0 3 * * 0", "full")]
        );
        assert_eq!(
            mixed.reason,
            "large, high activity → mixed: weekly full + daily incremental"
        );
        // Incremental strategies carry a weekly full (the matrix's legend).
        let inc = recommend(S::Medium, A::High);
        assert_eq!(
            inc.runs,
            vec![run("0 */6 * * *", "incremental"), run("0 3 * * 0", "full")]
        );
        assert_eq!(
            recommend(S::Large, A::Low).runs,
            vec![run("0 3 * * 0", "full")]
        );
    }

    #[test]
    fn classes_have_seed_000_boundaries() {
        assert_eq!(SizeClass::of(99_999_999), S::Small);
        assert_eq!(SizeClass::of(100_000_000), S::Medium);
        assert_eq!(SizeClass::of(999_999_999), S::Medium);
        assert_eq!(SizeClass::of(1_000_000_000), S::Large);
        assert_eq!(Activity::of(19), A::Low);
        assert_eq!(Activity::of(20), A::Medium);
        assert_eq!(Activity::of(99), A::Medium);
        assert_eq!(Activity::of(100), A::High);
    }
}
