//! Reads the configuration's shape without stopping at the first mistake.
//!
//! serde stops at the first unknown key or wrong type. To list them all in
//! one `config check`, the document is parsed once into a span-preserving
//! tree (`toml::de::DeTable`); after each structural error the key or value
//! it points at is taken out of the tree and the shape is read again, until
//! it reads. The checks that follow see every other key as written.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A structural or syntax error: where, and what (naming the key).
pub(super) struct Found {
    /// Byte span in the text; `None` when serde gave none.
    pub(super) span: Option<Range<usize>>,
    /// The message, with the dotted key first when known.
    pub(super) message: String,
}

/// The most structural errors listed before giving up (each one costs a
/// fresh read of the document).
const MAX_ERRORS: usize = 200;

/// Reads `text` as `T`, collecting every structural error. `Err` holds a
/// syntax error (nothing can be read past it); `Ok((None, _))` means the
/// shape could not be read even with the faulty keys taken out.
pub(super) fn read<T: DeserializeOwned>(text: &str) -> Result<(Option<T>, Vec<Found>), Found> {
    let mut doc = DeTable::parse(text).map_err(|e| Found {
        span: e.span(),
        message: e.message().trim().to_string(),
    })?;
    let mut found = Vec::new();
    while found.len() < MAX_ERRORS {
        let e = match T::deserialize(toml::de::Deserializer::from(doc.clone())) {
            Ok(t) => return Ok((Some(t), found)),
            Err(e) => e,
        };
        let message = e.message().trim().to_string();
        let removed = e.span().and_then(|s| remove_at(doc.get_mut(), &s, ""));
        match removed {
            Some(key) => found.push(Found {
                span: e.span(),
                message: format!("{key}: {message}"),
            }),
            None => {
                found.push(Found {
                    span: e.span(),
                    message,
                });
                return Ok((None, found));
            }
        }
    }
    Ok((None, found))
}

/// Takes out of `t` the entry (or array element) whose key or value spans
/// exactly `span`, searching depth first; returns its dotted key.
fn remove_at(t: &mut DeTable<'_>, span: &Range<usize>, prefix: &str) -> Option<String> {
    let hit = t
        .iter()
        .find(|(k, v)| k.span() == *span || v.span() == *span)
        .map(|(k, _)| k.get_ref().to_string());
    if let Some(name) = hit {
        // DeTable's `retain` wants plain string keys: rebuild it instead.
        let old = std::mem::take(t);
        for (k, v) in old {
            if k.get_ref().as_ref() != name.as_str() {
                t.insert(k, v);
            }
        }
        return Some(join(prefix, &name));
    }
    for (k, v) in t.iter_mut() {
        let path = join(prefix, k.get_ref());
        if let Some(p) = remove_in(v, span, &path) {
            return Some(p);
        }
    }
    None
}

/// [`remove_at`] below one value (a table, or an array's elements).
fn remove_in(v: &mut Spanned<DeValue<'_>>, span: &Range<usize>, path: &str) -> Option<String> {
    match v.get_mut() {
        DeValue::Table(t) => remove_at(t, span, path),
        DeValue::Array(a) => {
            if let Some(i) = a.iter().position(|e| e.span() == *span) {
                // DeArray has no `remove`: rebuild it without the element.
                let old = std::mem::replace(a, toml::de::DeArray::new());
                for (j, e) in old.iter().enumerate() {
                    if j != i {
                        a.push(e.clone());
                    }
                }
                return Some(format!("{path}[{i}]"));
            }
            a.iter_mut()
                .enumerate()
                .find_map(|(i, e)| remove_in(e, span, &format!("{path}[{i}]")))
        }
        _ => None,
    }
}

/// `prefix.name`, or `name` at the top.
fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Shape {
        a: Option<i64>,
        b: Option<bool>,
        t: Option<Inner>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        x: Option<Vec<String>>,
    }

    #[test]
    fn every_structural_error_is_found() {
        let text = "a = \"one\"\nb = 2\nc = 3\n[t]\nx = [\"ok\", 4]\ny = 1\n";
        let (shape, found) = read::<Shape>(text).map_err(|f| f.message).unwrap();
        assert!(shape.is_some());
        let keys: Vec<&str> = found
            .iter()
            .map(|f| f.message.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            vec!["a", "b", "c", "t.x[1]", "t.y"],
            "{:?}",
            found.iter().map(|f| &f.message).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_syntax_error_stops() {
        let Err(f) = read::<Shape>("a = \n") else {
            panic!("read")
        };
        assert!(f.span.is_some());
    }
}
