//! The one printer of an error's chain: the error's own message, then each
//! `source()` in turn. Every `Display` in the crate describes only its own
//! layer, so the chain reads once from outermost to innermost.

use std::error::Error;

/// The messages of `e` and its sources, outermost first.
pub(crate) fn messages(e: &dyn Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push(c.to_string());
        cur = c.source();
    }
    out
}

/// `e` and its sources joined by ": ", for text no edge prints again (the
/// state file, the audit log, a health check's reason, a failed deploy's
/// message).
pub(crate) fn chain(e: &dyn Error) -> String {
    messages(e).join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading /x")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_once_outermost_first() {
        let e = Outer(std::io::Error::from_raw_os_error(2));
        assert_eq!(
            chain(&e),
            "reading /x: No such file or directory (os error 2)"
        );
        assert_eq!(messages(&e).len(), 2);
    }
}
