//! 32-byte object and blob identifiers, shown as lowercase hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Unkeyed BLAKE3 of stored bytes: the name of packs, index segments and snapshots.
    pub fn of_stored(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    pub fn random() -> Id {
        Id(rand::random())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 8 hex digits, as listings show them.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Id> {
        Some(Id(bytes.try_into().ok()?))
    }
}

impl TryFrom<&[u8]> for Id {
    type Error = std::array::TryFromSliceError;
    fn try_from(b: &[u8]) -> std::result::Result<Id, Self::Error> {
        Ok(Id(b.try_into()?))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = Id::default();
        match hex::decode_to_slice(s, &mut id.0) {
            Ok(()) => Ok(id),
            // The wrong length: say whether it is hex at all.
            Err(hex::FromHexError::InvalidStringLength) => match hex::decode(s) {
                Ok(_) => Err(format!("bad id {s:?}: not 32 bytes")),
                Err(e) => Err(format!("bad id {s:?}: {e}")),
            },
            Err(e) => Err(format!("bad id {s:?}: {e}")),
        }
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than a String: a dump's list holds thousands of ids.
        struct HexId;
        impl serde::de::Visitor<'_> for HexId {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a 64-digit hex id")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Id, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(HexId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_from_json_and_bad_ones_say_why() {
        let ids = vec![Id::random(), Id::default(), Id([0xab; 32])];
        let json = serde_json::to_string(&ids).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Id>>(&json).unwrap(), ids);
        let short = "ab".repeat(31);
        for (bad, why) in [
            (short.as_str(), "not 32 bytes"),
            (&short[..61], "Odd number of digits"),
            ("zz", "Invalid character"),
        ] {
            let err = bad.parse::<Id>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
            let err = serde_json::from_str::<Id>(&format!("{bad:?}")).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        assert!(serde_json::from_str::<Id>("17").is_err());
    }
}
