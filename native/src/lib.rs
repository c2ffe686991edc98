//! Native columnar decoder of streamer's engagement events.
//!
//! One call decodes a batch of raw Kafka message values (JSON objects) into columns. It
//! accepts only the *common shape*: a JSON object with string `user_id`, `item_id` and
//! `action`, a numeric `ts`, an optional numeric `weight`, an optional integer
//! `schema_version` and an optional string `event_id`, all within the decoder's bounds
//! (`streamer.events.decode.Decoder` passes them). Every other message (bad JSON, a
//! wrong type, a bound missed, a duplicate key, `null`, a non-bytes value, ...) is only
//! *listed*: the Python decoder decides it and finds the exact reason. So the verdicts,
//! values and counters are those of the Python decoder; only the cost differs.
//!
//! JSON is parsed by serde_json (RFC 8259) with correctly rounded floats
//! (`float_roundtrip`), as orjson parses them, so accepted values are bitwise equal.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyList, PyString, PyTuple};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One JSON value, reduced to what the common shape needs to tell apart.
#[derive(Default)]
enum J<'a> {
    /// The key is absent (the field's default).
    #[default]
    Missing,
    Str(Cow<'a, str>),
    /// A number written with a fraction or an exponent (Python `float`).
    F(f64),
    /// An integer literal that fits in `i64` (Python `int`).
    I(i64),
    /// Anything else: `null`, a boolean, an array, an object, a huge integer.
    Other,
}

struct JVisitor<'a>(PhantomData<J<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for JVisitor<'a> {
    type Value = J<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<J<'a>, E> {
        Ok(J::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<J<'a>, E> {
        Ok(J::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<J<'a>, E> {
        Ok(J::Str(Cow::Owned(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<J<'a>, E> {
        Ok(J::F(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<J<'a>, E> {
        Ok(J::I(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<J<'a>, E> {
        Ok(i64::try_from(v).map_or(J::Other, J::I))
    }
    fn visit_bool<E>(self, _: bool) -> Result<J<'a>, E> {
        Ok(J::Other)
    }
    fn visit_unit<E>(self) -> Result<J<'a>, E> {
        Ok(J::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J<'a>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(J::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J<'a>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(J::Other)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for J<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JVisitor(PhantomData))
    }
}

/// The fields of an event; unknown keys are skipped, a repeated key is an error (the
/// message then goes to the Python decoder, which applies JSON's last-key-wins rule).
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    user_id: J<'a>,
    #[serde(borrow, default)]
    item_id: J<'a>,
    #[serde(borrow, default)]
    action: J<'a>,
    #[serde(borrow, default)]
    ts: J<'a>,
    #[serde(borrow, default)]
    weight: J<'a>,
    #[serde(borrow, default)]
    schema_version: J<'a>,
    #[serde(borrow, default)]
    event_id: J<'a>,
}

/// Number of code points (Python's `len` of a `str`).
fn n_chars(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// The bounds of the common shape (the Python decoder's settings).
struct Bounds<'a> {
    lo: f64,
    hi: f64,
    w_lo: f64,
    w_hi: f64,
    id_max: usize,
    eid_max: usize,
    v_max: i64,
    known: Option<&'a HashMap<String, Py<PyString>>>,
}

/// An accepted event: (user_id, item_id, action, ts, weight, schema_version, event_id).
type Row<'a> = (
    Cow<'a, str>,
    Cow<'a, str>,
    Cow<'a, str>,
    f64,
    f64,
    i64,
    Option<Cow<'a, str>>,
);

/// More opening brackets than this and the Python decoder decides: serde_json skips
/// unknown fields of any depth, orjson refuses more than 1024 levels, so a message is
/// only accepted here when it cannot be that deep (a bound on the depth, kept well
/// below orjson's).
const MAX_OPENERS: usize = 512;

/// A run of more digits than this and the Python decoder decides. orjson rounds exact
/// halfway cases wrongly past 768 significant digits (serde_json and Python's `float`
/// round to even), and CPython refuses integers of more than 4,300 digits where orjson
/// hands them to the stdlib parser; serde_json skips unknown numbers of any length.
/// Found by differential fuzzing; no real event has such a number.
const MAX_DIGIT_RUN: usize = 100;

/// True if `raw` could be too deep or hold too long a number for the two parsers to
/// agree (see [`MAX_OPENERS`], [`MAX_DIGIT_RUN`]).
fn beyond_common_ground(raw: &[u8]) -> bool {
    let mut openers = 0usize;
    let mut run = 0usize;
    for &c in raw {
        if c.is_ascii_digit() {
            run += 1;
            if run > MAX_DIGIT_RUN {
                return true;
            }
            continue;
        }
        run = 0;
        if c == b'[' || c == b'{' {
            openers += 1;
            if openers > MAX_OPENERS {
                return true;
            }
        }
    }
    false
}

/// Return the event if `raw` is in the common shape within `b`, else `None`.
fn accept<'a>(raw: &'a [u8], b: &Bounds) -> Option<Row<'a>> {
    if beyond_common_ground(raw) {
        return None;
    }
    // the whole message must be UTF-8, as orjson requires: serde_json checks only the
    // strings it reads, not those inside skipped fields
    let text = std::str::from_utf8(raw).ok()?;
    // a JSON object only: serde's derived struct reads a JSON array too (its elements in
    // field order), which the Python decoder rejects as not_object (found in a trial)
    let first = text
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(b'{') {
        return None;
    }
    let ev: Event<'a> = serde_json::from_str(text).ok()?;
    let (J::Str(u), J::Str(it), J::Str(a)) = (ev.user_id, ev.item_id, ev.action) else {
        return None;
    };
    // an integer ts or weight is Python's float(int): correctly rounded, as `as` is
    let t = match ev.ts {
        J::F(t) => t,
        J::I(t) => t as f64,
        _ => return None,
    };
    if t == 0.0 {
        // serde_json reads the integer `-0` as the float -0.0, orjson as the int 0
        // (Python's float(0) is +0.0): let the Python decoder decide a zero
        return None;
    }
    let w = match ev.weight {
        J::Missing => 1.0,
        J::F(w) => w,
        J::I(w) => w as f64,
        _ => return None,
    };
    let v = match ev.schema_version {
        J::Missing => 1,
        J::I(v) => v,
        _ => return None,
    };
    let eid = match ev.event_id {
        J::Missing => None,
        J::Str(s) => Some(s),
        _ => return None,
    };
    let nu = n_chars(&u);
    let ni = n_chars(&it);
    let ok = 0 < nu
        && nu <= b.id_max
        && 0 < ni
        && ni <= b.id_max
        && b.known.is_none_or(|k| k.contains_key(a.as_ref()))
        && b.lo <= t
        && t <= b.hi
        && b.w_lo <= w
        && w <= b.w_hi
        && 1 <= v
        && v <= b.v_max
        && eid.as_ref().is_none_or(|e| {
            let n = n_chars(e);
            0 < n && n <= b.eid_max
        });
    ok.then_some((u, it, a, t, w, v, eid))
}

/// Decode a batch of message values into columns.
///
/// Parameters: `values` is a list of `n` message values (`bytes`; anything else, such as
/// `None`, is left to the Python decoder); `actions` the configured action names, or
/// `None` when the `"*"` wildcard accepts any; `lo`, `hi` the accepted event-time range
/// (seconds since the epoch, inclusive); `w_lo`, `w_hi` the weight range (inclusive);
/// `id_max`, `eid_max` the maximum length in code points of the ids and of `event_id`;
/// `v_max` the highest schema version.
///
/// Returns a tuple of 9 lists: positions of the accepted messages (ascending ints), their
/// `user_id`, `item_id` and `action` (str), `ts` and `weight` (float), `schema_version`
/// (int), `event_id` (str or None), and the positions of every other message (ascending),
/// for the Python decoder. Raises `TypeError` if `values` is not a list.
#[pyfunction]
#[pyo3(signature = (values, actions, lo, hi, w_lo, w_hi, id_max, eid_max, v_max))]
#[allow(clippy::too_many_arguments)]
fn decode_events<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
    actions: Option<Vec<String>>,
    lo: f64,
    hi: f64,
    w_lo: f64,
    w_hi: f64,
    id_max: usize,
    eid_max: usize,
    v_max: i64,
) -> PyResult<Bound<'py, PyTuple>> {
    // one Python str per action name, shared by every row that names it
    let mut names: HashMap<String, Py<PyString>> = HashMap::new();
    if let Some(list) = &actions {
        for a in list {
            names.insert(a.clone(), PyString::new(py, a).unbind());
        }
    }
    let wildcard = actions.is_none();
    let n = values.len();
    let mut index: Vec<usize> = Vec::with_capacity(n);
    let mut users: Vec<Bound<'py, PyString>> = Vec::with_capacity(n);
    let mut items: Vec<Bound<'py, PyString>> = Vec::with_capacity(n);
    let mut acts: Vec<Bound<'py, PyString>> = Vec::with_capacity(n);
    let mut ts: Vec<Bound<'py, PyFloat>> = Vec::with_capacity(n);
    let mut weights: Vec<Bound<'py, PyFloat>> = Vec::with_capacity(n);
    let mut versions: Vec<i64> = Vec::with_capacity(n);
    let mut eids: Vec<Option<Bound<'py, PyString>>> = Vec::with_capacity(n);
    let mut others: Vec<usize> = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let Ok(bytes) = value.cast_exact::<PyBytes>() else {
            others.push(i);
            continue;
        };
        let row = {
            let b = Bounds {
                lo,
                hi,
                w_lo,
                w_hi,
                id_max,
                eid_max,
                v_max,
                known: if wildcard { None } else { Some(&names) },
            };
            accept(bytes.as_bytes(), &b)
        };
        let Some((u, it, a, t, w, v, eid)) = row else {
            others.push(i);
            continue;
        };
        let action = match names.get(a.as_ref()) {
            Some(s) => s.bind(py).clone(),
            None => {
                // wildcard: a name not configured, shared from now on too
                let s = PyString::new(py, &a);
                names.insert(a.into_owned(), s.clone().unbind());
                s
            }
        };
        index.push(i);
        users.push(PyString::new(py, &u));
        items.push(PyString::new(py, &it));
        acts.push(action);
        ts.push(PyFloat::new(py, t));
        weights.push(PyFloat::new(py, w));
        versions.push(v);
        eids.push(eid.map(|e| PyString::new(py, &e)));
    }
    let columns: Vec<Bound<'py, PyAny>> = vec![
        PyList::new(py, index)?.into_any(),
        PyList::new(py, users)?.into_any(),
        PyList::new(py, items)?.into_any(),
        PyList::new(py, acts)?.into_any(),
        PyList::new(py, ts)?.into_any(),
        PyList::new(py, weights)?.into_any(),
        PyList::new(py, versions)?.into_any(),
        PyList::new(py, eids)?.into_any(),
        PyList::new(py, others)?.into_any(),
    ];
    PyTuple::new(py, columns)
}

/// streamer_native: the native columnar event decoder (see `decode_events`).
#[pymodule]
fn streamer_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(decode_events, m)?)?;
    Ok(())
}
