//! The JSON tree the payload parsers walk, and the typed field access they
//! share. `serde_json::Value` would do, except that it keeps the last of
//! two equal keys without a word: `{"seq":1,"seq":2}` must be refused, not
//! read as 2. Walking a tree by hand (instead of deriving `Deserialize`)
//! is also what lets every error name the field, the value and what is
//! allowed, in [`PayloadError`]s with stable kinds.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::PayloadError;

/// A parsed JSON value with every object's keys in order, repeats kept.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer without sign that fits in 64 bits.
    UInt(u64),
    /// A negative integer that fits in 64 bits.
    Int(i64),
    /// Any other number (a fraction, an exponent, or an integer too large
    /// for 64 bits): `serde_json` reads it as the nearest `f64`.
    Float(f64),
    /// A string.
    Str(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, as written: duplicates are the walker's to refuse.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses a payload. Syntax errors keep `serde_json`'s line and column;
    /// a number beyond `f64` (`1e999`, the only way JSON can spell an
    /// infinity) is a range error rather than a syntax one.
    pub(super) fn parse(payload: &[u8]) -> Result<Json, PayloadError> {
        serde_json::from_slice(payload).map_err(|e| {
            let detail = e.to_string();
            // serde_json's wording for ErrorCode::NumberOutOfRange; the
            // corpus (tests/raw_corpus.rs) pins it, so a change in a
            // serde_json release fails a test instead of relabelling.
            if detail.starts_with("number out of range") {
                PayloadError::NumberTooLarge { detail }
            } else {
                PayloadError::Json { detail }
            }
        })
    }

    /// What it is, for messages: `the string "20"`, `an array`.
    pub(super) fn describe(&self) -> String {
        match self {
            Json::Null => "null".to_owned(),
            Json::Bool(b) => b.to_string(),
            Json::UInt(n) => format!("the number {n}"),
            Json::Int(n) => format!("the number {n}"),
            // `{:?}` keeps the fraction (`1764028800000.0`): a float
            // where an integer belongs must look like one.
            Json::Float(f) => format!("the number {f:?}"),
            Json::Str(s) => format!("the string {}", quote(s)),
            Json::Array(_) => "an array".to_owned(),
            Json::Object(_) => "an object".to_owned(),
        }
    }
}

/// `s` quoted for a message, cut to its first 40 characters: an error
/// line quotes what was wrong, not a whole hostile payload.
pub(super) fn quote(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{:?}…", &s[..end]),
        None => format!("{s:?}"),
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

/// Builds a [`Json`] from whatever `serde_json` finds.
struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Json, E> {
        Ok(Json::UInt(n))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Json, E> {
        Ok(u64::try_from(n).map_or(Json::Int(n), Json::UInt))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Json, E> {
        Ok(Json::Float(f))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Json, E> {
        Ok(Json::Str(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Json, E> {
        Ok(Json::Str(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(pair) = map.next_entry()? {
            pairs.push(pair);
        }
        Ok(Json::Object(pairs))
    }
}

/// The fields of one JSON object, checked against the names a shape
/// allows: constructing one refuses unknown and repeated keys, its getters
/// refuse missing fields and wrong types, naming the field in each error.
pub(super) struct Fields<'a> {
    /// The object's pairs.
    pairs: &'a [(String, Json)],
    /// Put before field names in errors: `""` at the top, `"weight."`
    /// inside the weights.
    path: &'static str,
    /// What the shape needs, for the missing-field message.
    needs: &'static str,
}

impl<'a> Fields<'a> {
    /// The fields of `pairs`, if each key is one of `allowed` (told to the
    /// sender as `known`) and none is repeated.
    pub(super) fn new(
        pairs: &'a [(String, Json)],
        allowed: &[&str],
        path: &'static str,
        known: &'static str,
        needs: &'static str,
    ) -> Result<Self, PayloadError> {
        for (i, (key, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&key.as_str()) {
                return Err(PayloadError::UnknownField {
                    field: quote(&format!("{path}{key}")),
                    allowed: known,
                });
            }
            if pairs[..i].iter().any(|(k, _)| k == key) {
                return Err(PayloadError::DuplicateField {
                    field: format!("{path}{key}"),
                });
            }
        }
        Ok(Self { pairs, path, needs })
    }

    /// Whether the object has `name`.
    pub(super) fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The value of `name`, if present.
    pub(super) fn get(&self, name: &str) -> Option<&'a Json> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The full name of a field, for errors.
    pub(super) fn name(&self, name: &str) -> String {
        format!("{}{name}", self.path)
    }

    /// The value of `name`, which must be present.
    pub(super) fn required(&self, name: &str) -> Result<&'a Json, PayloadError> {
        self.get(name).ok_or_else(|| PayloadError::MissingField {
            field: self.name(name),
            needs: self.needs,
        })
    }

    fn wrong_type(&self, name: &str, expected: &'static str, found: &Json) -> PayloadError {
        PayloadError::Type {
            field: self.name(name),
            expected,
            found: found.describe(),
        }
    }

    /// A required string.
    pub(super) fn str(&self, name: &str) -> Result<&'a str, PayloadError> {
        match self.required(name)? {
            Json::Str(s) => Ok(s),
            other => Err(self.wrong_type(name, "a string", other)),
        }
    }

    /// A required number, as an `f64`; JSON integers are numbers too.
    pub(super) fn f64(&self, name: &str) -> Result<f64, PayloadError> {
        let v = self.required(name)?;
        // A JSON integer in a float field means the nearest float, as in
        // JavaScript (exact for every value a sensor reports).
        let f = match *v {
            Json::Float(f) => f,
            Json::UInt(n) => n as f64,
            Json::Int(n) => n as f64,
            _ => return Err(self.wrong_type(name, "a number", v)),
        };
        // `serde_json` never yields a non-finite float (1e999 is refused
        // while parsing), but the rule is the contract's, not the parser's.
        if !f.is_finite() {
            return Err(self.out_of_range(name, f.to_string(), "a finite number".to_owned()));
        }
        Ok(f)
    }

    /// A required integer in `min..=max`: a JSON integer, not `1.0` or
    /// `1e3`, which would mean the sender computes seqs or times in floats.
    pub(super) fn int(&self, name: &str, min: i128, max: i128) -> Result<i128, PayloadError> {
        let v = self.required(name)?;
        let n = match *v {
            Json::UInt(n) => i128::from(n),
            Json::Int(n) => i128::from(n),
            // An integer beyond 64 bits reaches us as a float: out of
            // range, not of the wrong type.
            Json::Float(f) if f.fract() == 0.0 && f.abs() >= 9.2e18 => {
                return Err(self.out_of_range(name, f.to_string(), range(min, max)));
            }
            _ => return Err(self.wrong_type(name, "an integer", v)),
        };
        if n < min || n > max {
            return Err(self.out_of_range(name, n.to_string(), range(min, max)));
        }
        Ok(n)
    }

    /// An optional `true`/`false`.
    pub(super) fn bool(&self, name: &str) -> Result<Option<bool>, PayloadError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong_type(name, "true or false", other)),
        }
    }

    /// A required object, as the fields its shape allows.
    pub(super) fn object(
        &self,
        name: &str,
        allowed: &[&str],
        path: &'static str,
        known: &'static str,
        needs: &'static str,
    ) -> Result<Fields<'a>, PayloadError> {
        match self.required(name)? {
            Json::Object(pairs) => Fields::new(pairs, allowed, path, known, needs),
            other => Err(self.wrong_type(name, "an object", other)),
        }
    }

    /// A [`PayloadError::Range`] for `name`.
    pub(super) fn out_of_range(&self, name: &str, value: String, allowed: String) -> PayloadError {
        PayloadError::Range {
            field: self.name(name),
            value,
            allowed,
        }
    }
}

/// `min..=max` in words.
fn range(min: i128, max: i128) -> String {
    format!("an integer from {min} to {max}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_kept_for_the_walker_to_refuse() {
        let json = Json::parse(br#"{"a":1,"a":[true,null,-2,1.5,"x"]}"#).unwrap();
        let Json::Object(pairs) = &json else {
            panic!("{json:?}")
        };
        assert_eq!(pairs.len(), 2);
        assert_eq!(
            pairs[1].1,
            Json::Array(vec![
                Json::Bool(true),
                Json::Null,
                Json::Int(-2),
                Json::Float(1.5),
                Json::Str("x".into())
            ])
        );
        let e = Fields::new(pairs, &["a"], "", "a", "a").err().unwrap();
        assert_eq!(e.kind(), "duplicate_field");
    }

    #[test]
    fn quotes_are_cut_short() {
        assert_eq!(quote("abc"), "\"abc\"");
        let long = "é".repeat(100);
        let q = quote(&long);
        assert_eq!(q, format!("{:?}…", "é".repeat(40)));
    }

    #[test]
    fn integers_are_integers_and_within_their_range() {
        let json =
            Json::parse(br#"{"a":5,"b":1.0,"c":-1,"d":18446744073709551616,"e":"5"}"#).unwrap();
        let Json::Object(pairs) = &json else { panic!() };
        let f = Fields::new(pairs, &["a", "b", "c", "d", "e"], "", "", "").unwrap();
        assert_eq!(f.int("a", 0, 10).unwrap(), 5);
        assert_eq!(f.int("b", 0, 10).unwrap_err().kind(), "type");
        assert_eq!(f.int("c", 0, 10).unwrap_err().kind(), "range");
        let e = f.int("d", 0, 10).unwrap_err();
        assert_eq!(e.kind(), "range", "{e}");
        assert!(e.to_string().contains("18446744073709552000"), "{e}");
        assert_eq!(f.int("e", 0, 10).unwrap_err().kind(), "type");
        assert_eq!(f.int("z", 0, 10).unwrap_err().kind(), "missing_field");
        assert!((f.f64("b").unwrap() - 1.0).abs() < f64::EPSILON);
        assert!((f.f64("c").unwrap() + 1.0).abs() < f64::EPSILON);
        assert_eq!(f.f64("e").unwrap_err().kind(), "type");
    }
}
