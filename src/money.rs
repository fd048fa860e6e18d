//! Money: an exact decimal amount of AITBC. Never `f64` arithmetic on balances.
//!
//! On the wire the coordinator speaks JSON numbers (`"payment_amount": 5.0`) and sometimes decimal strings
//! (`"price_per_hour": "0.50000000"`); both are read exactly from their text. Amounts are written as JSON
//! numbers; with at most 15 significant digits (the service's bounds are 0.01 … 1,000,000) the shortest
//! float text round-trips to the same decimal.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An exact amount of AITBC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(pub Decimal);

impl Money {
    /// Zero AITBC.
    pub const ZERO: Money = Money(Decimal::ZERO);

    /// An amount from a whole number of AITBC.
    pub fn from_int(n: i64) -> Money {
        Money(Decimal::from(n))
    }

    /// The decimal value.
    pub fn decimal(self) -> Decimal {
        self.0
    }

    /// True when the amount is below zero.
    pub fn is_negative(self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }

    /// The amount as an `f64`, for the wire only.
    pub fn to_f64_lossy(self) -> f64 {
        use rust_decimal::prelude::ToPrimitive;
        self.0.to_f64().unwrap_or(0.0)
    }

    /// Reads an amount from an `f64` through its shortest decimal text (exact for ≤ 15 significant digits).
    pub fn from_f64(f: f64) -> Option<Money> {
        if !f.is_finite() {
            return None;
        }
        Decimal::from_str(&format!("{f}"))
            .ok()
            .or_else(|| Decimal::from_scientific(&format!("{f:e}")).ok())
            .map(|d| Money(d.normalize()))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.normalize())
    }
}

impl FromStr for Money {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t
            .strip_suffix("AITBC")
            .or_else(|| t.strip_suffix("AIT"))
            .unwrap_or(t)
            .trim();
        Decimal::from_str(t)
            .or_else(|_| Decimal::from_scientific(t))
            .map(|d| Money(d.normalize()))
            .map_err(|_| {
                format!("`{s}` is not an amount (expected a decimal number such as 500 or 0.25)")
            })
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, o: Money) -> Money {
        Money(self.0 + o.0)
    }
}
impl Sub for Money {
    type Output = Money;
    fn sub(self, o: Money) -> Money {
        Money(self.0 - o.0)
    }
}
impl AddAssign for Money {
    fn add_assign(&mut self, o: Money) {
        self.0 += o.0;
    }
}
impl SubAssign for Money {
    fn sub_assign(&mut self, o: Money) {
        self.0 -= o.0;
    }
}
impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, |a, b| a + b)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Integers go out as integers (500, not 500.0) so reports read naturally.
        let d = self.0.normalize();
        if d.scale() == 0 {
            use rust_decimal::prelude::ToPrimitive;
            if let Some(i) = d.to_i64() {
                return s.serialize_i64(i);
            }
        }
        s.serialize_f64(self.to_f64_lossy())
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match &v {
            serde_json::Value::Number(n) => {
                Money::from_str(&n.to_string()).map_err(serde::de::Error::custom)
            }
            serde_json::Value::String(s) => Money::from_str(s).map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "expected an amount, found {other}"
            ))),
        }
    }
}

impl schemars::JsonSchema for Money {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Money".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An exact amount of AITBC: a number (500, 0.25) or a decimal string (\"0.25\").",
            "type": ["number", "string"],
            "pattern": "^\\s*-?[0-9]+(\\.[0-9]+)?\\s*(AITBC|AIT)?\\s*$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_exactly() {
        let a: Money = "0.1".parse().unwrap();
        let b: Money = "0.2".parse().unwrap();
        assert_eq!((a + b).to_string(), "0.3");
    }

    #[test]
    fn reads_numbers_and_strings() {
        let m: Money = serde_json::from_str("5.0").unwrap();
        assert_eq!(m, Money::from_int(5));
        let m: Money = serde_json::from_str("\"0.50000000\"").unwrap();
        assert_eq!(m.to_string(), "0.5");
        assert!(serde_json::from_str::<Money>("true").is_err());
        assert!("abc".parse::<Money>().is_err());
    }

    #[test]
    fn writes_integers_as_integers() {
        assert_eq!(serde_json::to_string(&Money::from_int(500)).unwrap(), "500");
        let m: Money = "0.25".parse().unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "0.25");
    }
}
