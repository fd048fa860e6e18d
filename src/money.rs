//! Money: an exact decimal amount of AITBC. Never `f64` arithmetic on balances.
//!
//! On the wire the coordinator speaks JSON numbers (`"payment_amount": 5.0`) and sometimes decimal strings
//! (`"price_per_hour": "0.50000000"`); both are read exactly from their text — a JSON number is read
//! from its digits, never through an `f64` (which reads `1000000.00000000001` as 1000000 and
//! `0.0099999999999999999` as 0.01). An amount with more digits than a decimal can hold (28
//! significant digits) is refused, never rounded: a balance of 60 digits is an error, not a guess.
//!
//! Amounts are written as JSON numbers: an integer as an integer, an amount whose shortest float text is
//! itself (every amount of at most 15 significant digits) as that float, any other with its exact
//! digits. serde_json's `arbitrary_precision` would do the reading for every number, but it breaks
//! `#[serde(flatten)]`, which the API's types use for the fields we do not model; the number's text is
//! taken here instead, from serde_json's raw values, when the deserializer has it. A flattened struct's
//! buffer has none (it holds a number as an `f64`), so no type with an amount is read through one:
//! `StepReport` is read without flatten, and the API's types that keep unknown fields read their
//! amounts first ([`object_with_exact_amounts`]).

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
    /// Reads `500`, `0.25`, `-3`, `1e3`, `10 AIT`, `0.5 AITBC` exactly; an amount with more digits than
    /// a decimal holds is an error, never rounded.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t
            .strip_suffix("AITBC")
            .or_else(|| t.strip_suffix("AIT"))
            .unwrap_or(t)
            .trim();
        exact_decimal(t).map(Money).map_err(|e| {
            let shown = crate::text::shown(s);
            match e {
                Inexact::NotANumber => format!(
                    "`{shown}` is not an amount (expected a decimal number such as 500 or 0.25)"
                ),
                Inexact::TooManyDigits => format!(
                    "`{shown}` has more digits than an amount can hold exactly (at most 28 \
                     significant digits, 28 after the point); it is not rounded"
                ),
            }
        })
    }
}

/// Why a text is not an exact decimal.
enum Inexact {
    NotANumber,
    TooManyDigits,
}

/// The exact decimal a text writes (`-12.50`, `1e-3`, `.5`, `7.`), normalized; never rounded.
fn exact_decimal(t: &str) -> Result<Decimal, Inexact> {
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => {
            let e = &body[i + 1..];
            let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Inexact::NotANumber);
            }
            // Beyond this the value cannot be held, whatever the mantissa: refuse before building it.
            let exp: i64 = e.parse().map_err(|_| Inexact::TooManyDigits)?;
            (&body[..i], exp)
        }
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(Inexact::NotANumber);
    }
    // The common case, a whole number of at most 18 digits (`payment: 1`): read without building text.
    if exp == 0 && frac.is_empty() && int.len() <= 18 {
        let n: u64 = int.parse().map_err(|_| Inexact::NotANumber)?;
        let d = Decimal::from(n);
        return Ok(if neg && n != 0 { -d } else { d });
    }
    // The significant digits and the power of ten of the last one.
    let all = format!("{int}{frac}");
    let digits = all.trim_start_matches('0');
    let kept = digits.trim_end_matches('0');
    let zeros = (digits.len() - kept.len()) as i64;
    let power = exp
        .checked_sub(frac.len() as i64)
        .and_then(|p| p.checked_add(zeros))
        .ok_or(Inexact::TooManyDigits)?;
    if kept.is_empty() {
        return Ok(Decimal::ZERO);
    }
    if kept.len() > 29 || !(-28..=28).contains(&power) {
        return Err(Inexact::TooManyDigits);
    }
    let text = if power >= 0 {
        format!("{kept}{}", "0".repeat(power as usize))
    } else {
        let scale = (-power) as usize;
        if kept.len() > scale {
            format!(
                "{}.{}",
                &kept[..kept.len() - scale],
                &kept[kept.len() - scale..]
            )
        } else {
            format!("0.{}{kept}", "0".repeat(scale - kept.len()))
        }
    };
    let d = Decimal::from_str_exact(&text).map_err(|_| Inexact::TooManyDigits)?;
    Ok(if neg { -d } else { d }.normalize())
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
        let f = self.to_f64_lossy();
        if Money::from_f64(f) == Some(Money(d)) {
            return s.serialize_f64(f);
        }
        // A float would round it: the exact digits, as a JSON number (serde_json writes a raw value
        // as it is; another serializer sees a one-field struct).
        match serde_json::value::RawValue::from_string(d.to_string()) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_f64(f),
        }
    }
}

/// serde_json's name for a raw value: asking a deserializer for a newtype of this name gets the
/// value's text from serde_json (its stream deserializer and its `Value`), and the value itself from
/// any other deserializer.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_newtype_struct(RAW_VALUE_TOKEN, MoneyVisitor)
    }
}

/// Reads an amount from a JSON number's text, a decimal string, or (from a deserializer that has no
/// text, such as the buffer of a flattened struct) the number it was given.
struct MoneyVisitor;

impl MoneyVisitor {
    fn from_value<E: serde::de::Error>(v: &serde_json::Value) -> Result<Money, E> {
        match v {
            serde_json::Value::Number(n) => Money::from_str(&n.to_string()).map_err(E::custom),
            serde_json::Value::String(s) => Money::from_str(s).map_err(E::custom),
            other => Err(E::custom(format!(
                "expected an amount, found {}",
                crate::text::shown(&other.to_string())
            ))),
        }
    }
}

impl<'de> serde::de::Visitor<'de> for MoneyVisitor {
    type Value = Money;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an amount (a number or a decimal string)")
    }

    /// serde_json's raw value: one entry whose value is the JSON text.
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Money, A::Error> {
        use serde::de::Error;
        let key: Option<String> = map.next_key()?;
        if key.as_deref() != Some(RAW_VALUE_TOKEN) {
            return Err(A::Error::custom("expected an amount, found a mapping"));
        }
        let raw: String = map.next_value()?;
        let raw = raw.trim();
        if raw.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
            return Money::from_str(raw).map_err(A::Error::custom);
        }
        let v: serde_json::Value = serde_json::from_str(raw).map_err(A::Error::custom)?;
        Self::from_value(&v)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Money, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Self::from_value(&v)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Money, E> {
        Money::from_str(v).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Money, E> {
        Ok(Money(Decimal::from(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Money, E> {
        Ok(Money(Decimal::from(v)))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Money, E> {
        Money::from_f64(v).ok_or_else(|| E::custom(format!("expected an amount, found {v}")))
    }
}

/// Reads a JSON object whose `amounts` are read exactly, from their text, and kept as decimal strings
/// (which [`Money`] reads exactly from any deserializer); every other entry is read as a value.
///
/// For a type that keeps the fields it does not model in a `#[serde(flatten)]` map: serde buffers such
/// an object before it reads a field, and the buffer holds a JSON number as an `f64`, so an amount of
/// more than 15 significant digits would be rounded. The type's derived read (`#[serde(remote =
/// "Self")]`) then runs on the object this returns: see `api::PaymentView`.
pub fn object_with_exact_amounts<'de, D: Deserializer<'de>>(
    d: D,
    amounts: &'static [&'static str],
) -> Result<serde_json::Value, D::Error> {
    d.deserialize_map(ExactAmounts(amounts))
}

/// The visitor of [`object_with_exact_amounts`]: the names of the amounts.
struct ExactAmounts(&'static [&'static str]);

impl<'de> serde::de::Visitor<'de> for ExactAmounts {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = if self.0.contains(&key.as_str()) {
                match map.next_value::<Option<Money>>()? {
                    Some(m) => serde_json::Value::String(m.to_string()),
                    None => serde_json::Value::Null,
                }
            } else {
                map.next_value::<serde_json::Value>()?
            };
            out.insert(key, value);
        }
        Ok(serde_json::Value::Object(out))
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

    /// Whole numbers (read without building text) read as the same amounts as the long way does:
    /// the same number written with a fraction of zeros goes the long way.
    #[test]
    fn whole_numbers_read_as_their_decimal_form_does() {
        for t in [
            "0",
            "-0",
            "+0",
            "1",
            "007",
            "-12",
            "+5",
            "10",
            "7.",
            "999999999999999999",
            "1000000000000000000",
            "12345678901234567890123",
            "1 AITBC",
            "-3 AIT",
        ] {
            let whole: Money = t.parse().unwrap_or_else(|e| panic!("{t}: {e}"));
            let n = t
                .trim_end_matches(" AITBC")
                .trim_end_matches(" AIT")
                .trim_end_matches('.');
            let long: Money = format!("{n}.000").parse().expect("with a fraction");
            assert_eq!(whole, long, "{t}");
            assert_eq!(whole.to_string(), long.to_string(), "{t}");
        }
        assert_eq!("-0".parse::<Money>().unwrap().to_string(), "0");
        assert_eq!("007".parse::<Money>().unwrap().to_string(), "7");
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
    fn reads_json_numbers_from_their_digits() {
        // Through an f64 these would be 1000000 and 0.01.
        let m: Money = serde_json::from_str("1000000.00000000001").unwrap();
        assert_eq!(m.to_string(), "1000000.00000000001");
        let m: Money = serde_json::from_slice(b"0.0099999999999999999").unwrap();
        assert!(m < "0.01".parse().unwrap());
        let m: Option<Money> = serde_json::from_str("12.5e-1").unwrap();
        assert_eq!(m.unwrap().to_string(), "1.25");
        // Inside a struct, a map and an option alike.
        #[derive(serde::Deserialize)]
        struct Wire {
            amount: Money,
            by_wallet: std::collections::BTreeMap<String, Money>,
        }
        let w: Wire = serde_json::from_str(
            r#"{"amount": 0.30000000000000000001, "by_wallet": {"w": 2.000000000000000001}}"#,
        )
        .unwrap();
        assert_eq!(w.amount.to_string(), "0.30000000000000000001");
        assert_eq!(w.by_wallet["w"].to_string(), "2.000000000000000001");
        // From a `Value` (and so in a flattened struct) the number is what serde_json kept.
        let m: Money = serde_json::from_value(serde_json::json!(2.5)).unwrap();
        assert_eq!(m.to_string(), "2.5");
        let m: Money = serde_json::from_value(serde_json::json!("0.1")).unwrap();
        assert_eq!(m.to_string(), "0.1");
    }

    #[test]
    fn refuses_what_it_cannot_hold_instead_of_rounding() {
        let sixty = format!("1{}", "0".repeat(59));
        assert!(serde_json::from_str::<Money>(&sixty).is_err());
        let e = sixty.parse::<Money>().unwrap_err();
        assert!(e.contains("more digits than an amount can hold"), "{e}");
        assert!("0.00000000000000000000000000001".parse::<Money>().is_err());
        assert!("1e999999999999".parse::<Money>().is_err());
        assert!("1e-99999999999999999999".parse::<Money>().is_err());
        assert!("1e".parse::<Money>().is_err());
        assert!(".".parse::<Money>().is_err());
        assert_eq!(
            "1.50000000000000000000000000000000"
                .parse::<Money>()
                .unwrap()
                .to_string(),
            "1.5"
        );
        assert_eq!("7.".parse::<Money>().unwrap(), Money::from_int(7));
        assert_eq!("-.5".parse::<Money>().unwrap().to_string(), "-0.5");
        assert_eq!("1e3".parse::<Money>().unwrap(), Money::from_int(1000));
        assert_eq!("10 AIT".parse::<Money>().unwrap(), Money::from_int(10));
        assert_eq!("0".parse::<Money>().unwrap(), Money::ZERO);
    }

    #[test]
    fn writes_what_a_float_would_round_with_its_digits() {
        let m: Money = "1000000.00000000001".parse().unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "1000000.00000000001");
        let back: Money = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        let m: Money = "0.1".parse().unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "0.1");
    }

    #[test]
    fn writes_integers_as_integers() {
        assert_eq!(serde_json::to_string(&Money::from_int(500)).unwrap(), "500");
        let m: Money = "0.25".parse().unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "0.25");
    }
}
