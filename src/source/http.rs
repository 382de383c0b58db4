//! What every HTTP user of the process shares (the GitHub client, the chat
//! webhook, health checks): the TLS provider, the `User-Agent`, and how an
//! external error's causes are shown. Everything is async; blocking callers
//! go through [`bridge`](crate::source::bridge).

use reqwest::Url;

/// Installs the ring crypto provider for rustls. reqwest is built without a
/// default one (ring only, no aws-lc) and panics without it; installed
/// already is fine.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client builder with the crypto provider installed and the
/// process's `User-Agent` (`switchyard/<version>`, plus `suffix` when given).
pub(crate) fn client_builder(suffix: Option<&str>) -> reqwest::ClientBuilder {
    install_crypto_provider();
    let base = concat!("switchyard/", env!("CARGO_PKG_VERSION"));
    let agent = match suffix {
        Some(s) => format!("{base} {s}"),
        None => base.to_string(),
    };
    reqwest::Client::builder().user_agent(agent)
}

/// A URL for messages and logs: without its query string and fragment, which
/// on storage hosts carry short-lived signatures.
pub(crate) fn display_url(u: &Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_signatures() {
        let u = Url::parse("https://storage.example/a/b?X-Amz-Signature=s#f").unwrap();
        assert_eq!(display_url(&u), "https://storage.example/a/b");
    }
}
