//! Redaction of secrets and personal data in failure reports: hook output
//! routinely echoes environment variables, connection strings and user data,
//! and everything free-form that leaves the machine goes through [`redact`].
//!
//! Two decisions worth knowing:
//! - a dotted number with four parts, each at most 255, is an IPv4 address
//!   and is redacted; versions have three parts (`1.2.3`) and stay;
//! - loopback and unspecified addresses (`127.x.x.x`, `0.0.0.0`, `::1`,
//!   `::`) stay: they identify nobody, and "connection refused on
//!   127.0.0.1:8080" is often the whole diagnosis of a failed health check.
//!
//! Redaction is pattern-based, so it is best effort: it errs on the side of
//! redacting, but an unusual secret format can pass.

use std::sync::LazyLock;

use regex::{Captures, Regex};

/// Redacts secrets and personal data, replacing each with `[REDACTED:kind]`:
///
/// - `private_key`: `-----BEGIN … PRIVATE KEY-----` blocks (to the end of the
///   text when the END line is missing; the base64 lines above an END line
///   whose BEGIN was cut off);
/// - `credentials`: the `user:password` of a URL (a bare user name, such as
///   `git@`, stays unless it is token-long);
/// - `authorization`: the value of an `Authorization:` header, scheme kept;
/// - `cookie`: the value of a `Cookie:` or `Set-Cookie:` header;
/// - `token`: `Bearer …`, `token <long value>`, and well-known formats
///   (Slack, GitLab, Stripe, npm, Google API keys, JWTs);
/// - `github_token`: `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`;
/// - `aws_key`: AWS access key ids (`AKIA…`, `ASIA…`, …);
/// - `secret`: the value after a key that ends in `password`, `passwd`,
///   `passphrase`, `secret`, `token`, `api_key`, `access_key`,
///   `private_key`, `secret_key`, `credential(s)`, `signature`, `sig`, `dsn`,
///   `session_id`
///   followed by `=` or `:` (KEY=VALUE lines, query strings, JSON, YAML),
///   and after `--password`, `--token`, … flags;
/// - `email`: e-mail addresses (also `%40`-encoded);
/// - `ipv6`, `ipv4`: addresses, except loopback and unspecified ones; four
///   dotted parts each at most 255 make an IPv4 address (versions have three);
/// - `mac`: MAC addresses;
/// - `phone`: `+` international numbers (7 to 15 digits; 10 or more when
///   written without separators), `(555) 123-4567`, `555-123-4567`, and
///   national numbers with a leading 0 (`030 1234567`, `06 12 34 56 78`,
///   `01511234567`).
///
/// Left alone, because reports are useless without them: versions (`1.2.3`,
/// `v10.0.1-rc.1`), dates, times, deploy ids, hex digests, paths and ports.
/// `redact(redact(x)) == redact(x)`.
pub(crate) fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for rule in RULES.iter() {
        let next = match &rule.action {
            Action::Kind(kind) => rule
                .re
                .replace_all(&out, format!("[REDACTED:{kind}]").as_str())
                .into_owned(),
            Action::With(f) => rule
                .re
                .replace_all(&out, |c: &Captures| f(&out, c))
                .into_owned(),
        };
        out = next;
    }
    out
}

type Replacer = fn(&str, &Captures) -> String;

enum Action {
    /// Replace the whole match.
    Kind(&'static str),
    /// Decide with the text around the match at hand.
    With(Replacer),
}

struct Rule {
    re: Regex,
    action: Action,
}

fn rule(re: &str, action: Action) -> Rule {
    Rule {
        re: Regex::new(re).expect("redaction patterns are valid"),
        action,
    }
}

/// The rules, in order: specific formats before the generic ones, so a
/// GitHub token in `GITHUB_TOKEN=…` or `token ghp_…` is reported as one; IPv6 before IPv4 so
/// `::ffff:10.0.0.1` goes whole; phone numbers last, once addresses are gone.
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    use Action::{Kind, With};
    vec![
        rule(
            r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
            Kind("private_key"),
        ),
        rule(
            r"(?m)(?:^[A-Za-z0-9+/=]{8,}\r?\n)*^-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----",
            Kind("private_key"),
        ),
        rule(
            r"(?i)\b([a-z][a-z0-9+.-]{1,15}://)([^\s/?#]+)@",
            With(url_userinfo),
        ),
        rule(
            r"gh[pousr]_[A-Za-z0-9]{10,}|github_pat_[A-Za-z0-9_]{10,}",
            Kind("github_token"),
        ),
        rule(
            r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}\b",
            Kind("aws_key"),
        ),
        rule(
            r"\bxox[abposr]-[A-Za-z0-9-]{10,}|\bglpat-[A-Za-z0-9_-]{20,}|\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|\bnpm_[A-Za-z0-9]{36}\b|\bAIza[0-9A-Za-z_-]{35}|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
            Kind("token"),
        ),
        rule(
            r#"(?i)\b((?:proxy-)?authorization["']?[ \t]*[:=][ \t]*["']?)(?:(bearer|basic|token|digest|negotiate|ntlm|apikey)[ \t]+)?([^\s"',;]+)"#,
            With(authorization),
        ),
        rule(
            r"(?i)\b((?:set-)?cookie[ \t]*:[ \t]*)[^\r\n]+",
            With(cookie),
        ),
        rule(
            r"(?i)\b(bearer)[ \t]+[A-Za-z0-9\-._~+/]{8,}=*",
            With(keep_word_token),
        ),
        rule(
            r"(?i)\b(token)[ \t]+([A-Za-z0-9_\-.]{20,})",
            With(token_word),
        ),
        rule(
            r#"(?i)((?:[a-z0-9_.-]*[_.-])?(?:password|passwd|passphrase|secret(?:[_.-]?key(?:[_.-]?base)?)?|token|(?:api|access|private|signing|encryption|master|client)[_.-]?key|apikey|client[_.-]?secret|credentials?|signature|sig|dsn|session[_.-]?id|sessid)["']?)([ \t]*[=:][ \t]*)("[^"\n]*"|'[^'\n]*'|[^\s&;,"'<>]+)"#,
            With(key_value),
        ),
        rule(
            r"(?i)(--(?:password|passwd|passphrase|token|secret|api-key|apikey|access-token|auth-token|client-secret))([ \t]+)([^\s-]\S*)",
            With(flag_value),
        ),
        rule(
            r"(?i)([A-Z0-9._%+-]+)(?:@|%40)[A-Z0-9-]+(?:\.[A-Z0-9-]+)*\.[A-Z]{2,}\b",
            With(email),
        ),
        rule(r"[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*", With(ipv6)),
        rule(
            r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b",
            With(ipv4),
        ),
        rule(r"(?i)\b[0-9a-f]{2}(?:[:-][0-9a-f]{2}){5}\b", Kind("mac")),
        rule(
            r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){1,6}",
            With(phone_international),
        ),
        rule(r"\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}\b", Kind("phone")),
        rule(r"\b\d{3}[.-]\d{3}[.-]\d{4}\b", With(phone_nanp)),
        rule(r"\b0\d(?:\.\d{2}){4}\b", With(phone_national)),
        rule(r"\b0\d{1,4}(?:[ /-]\d{2,8}){1,4}\b", With(phone_national)),
        rule(r"\b0[1-9]\d{8,10}\b", Kind("phone")),
    ]
});

static DATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d{4}-\d{2}-\d{2}").expect("valid pattern"));

fn already(s: &str) -> bool {
    s.starts_with("[REDACTED:") || s.starts_with("\"[REDACTED:") || s.starts_with("'[REDACTED:")
}

fn before(hay: &str, c: &Captures) -> Option<char> {
    hay[..c.get(0).map_or(0, |m| m.start())].chars().next_back()
}

fn after<'a>(hay: &'a str, c: &Captures) -> &'a str {
    &hay[c.get(0).map_or(hay.len(), |m| m.end())..]
}

fn whole(c: &Captures) -> String {
    c[0].to_string()
}

fn url_userinfo(_: &str, c: &Captures) -> String {
    let info = &c[2];
    // `git@host` names a service account, not a secret; a long bare user
    // name is a token used as one (`https://<token>@github.com`).
    if info.contains(':') || info.len() >= 16 {
        format!("{}[REDACTED:credentials]@", &c[1])
    } else {
        whole(c)
    }
}

fn authorization(_: &str, c: &Captures) -> String {
    if already(&c[3]) {
        return whole(c);
    }
    match c.get(2) {
        Some(scheme) => format!("{}{} [REDACTED:authorization]", &c[1], scheme.as_str()),
        None => format!("{}[REDACTED:authorization]", &c[1]),
    }
}

fn cookie(_: &str, c: &Captures) -> String {
    format!("{}[REDACTED:cookie]", &c[1])
}

fn keep_word_token(_: &str, c: &Captures) -> String {
    format!("{} [REDACTED:token]", &c[1])
}

fn token_word(_: &str, c: &Captures) -> String {
    let v = &c[2];
    // "token cache_directory_not_found" is prose; a secret mixes digits in.
    if v.chars().any(|ch| ch.is_ascii_digit()) && v.chars().any(|ch| ch.is_ascii_alphabetic()) {
        format!("{} [REDACTED:token]", &c[1])
    } else {
        whole(c)
    }
}

fn key_value(_: &str, c: &Captures) -> String {
    let v = &c[3];
    if already(v) {
        return whole(c);
    }
    let quote = match v.chars().next() {
        Some(q @ ('"' | '\'')) => q.to_string(),
        _ => String::new(),
    };
    format!("{}{}{quote}[REDACTED:secret]{quote}", &c[1], &c[2])
}

fn flag_value(_: &str, c: &Captures) -> String {
    if already(&c[3]) {
        return whole(c);
    }
    format!("{}{}[REDACTED:secret]", &c[1], &c[2])
}

fn email(_: &str, c: &Captures) -> String {
    // `git@github.com:o/r` is a Git remote (a service account), not a person.
    if c[1].eq_ignore_ascii_case("git") {
        whole(c)
    } else {
        "[REDACTED:email]".to_string()
    }
}

fn is_word(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

fn ipv6(hay: &str, c: &Captures) -> String {
    let m = &c[0];
    // `std::fs`, `crate::x` and the like are paths, not addresses.
    if before(hay, c).is_some_and(is_word) || after(hay, c).starts_with(is_word) {
        return m.to_string();
    }
    let mut addr = m;
    let mut parsed = addr.parse::<std::net::Ipv6Addr>();
    // "… at 2001:db8::1." and "2001:db8::1: refused" end in punctuation.
    while parsed.is_err() && (addr.ends_with('.') || addr.ends_with(':')) && addr.len() > 2 {
        addr = &addr[..addr.len() - 1];
        parsed = addr.parse();
    }
    let Ok(ip) = parsed else {
        return m.to_string();
    };
    // Times (12:30:45) fail to parse; "dead::beef" parses but is prose.
    if ip.is_loopback() || ip.is_unspecified() || !addr.chars().any(|ch| ch.is_ascii_digit()) {
        return m.to_string();
    }
    format!("[REDACTED:ipv6]{}", &m[addr.len()..])
}

fn ipv4(hay: &str, c: &Captures) -> String {
    let parts: Vec<u32> = (1..=4).filter_map(|i| c[i].parse().ok()).collect();
    if parts.len() != 4 || parts.iter().any(|p| *p > 255) {
        return whole(c);
    }
    // Part of a longer dotted number (1.2.3.4.5): not an address.
    let prev = hay[..c.get(0).map_or(0, |m| m.start())]
        .chars()
        .rev()
        .take(2)
        .collect::<Vec<_>>();
    if prev.first() == Some(&'.') && prev.get(1).is_some_and(char::is_ascii_digit) {
        return whole(c);
    }
    let rest = after(hay, c);
    if rest.starts_with('.') && rest[1..].starts_with(|ch: char| ch.is_ascii_digit()) {
        return whole(c);
    }
    if parts[0] == 127 || parts == [0, 0, 0, 0] {
        return whole(c);
    }
    "[REDACTED:ipv4]".to_string()
}

fn digits(s: &str) -> usize {
    s.chars().filter(char::is_ascii_digit).count()
}

fn phone_international(hay: &str, c: &Captures) -> String {
    let m = &c[0];
    let n = digits(m);
    let separated = m[1..].contains(|ch: char| !ch.is_ascii_digit());
    let ok = (7..=15).contains(&n)
        && (separated || n >= 10)
        && !before(hay, c).is_some_and(|ch| is_word(ch) || ch == '+')
        && !after(hay, c).starts_with(|ch: char| is_word(ch))
        && !DATE.is_match(m);
    if ok {
        "[REDACTED:phone]".to_string()
    } else {
        m.to_string()
    }
}

fn phone_nanp(hay: &str, c: &Captures) -> String {
    let m = &c[0];
    let seps: Vec<char> = m.chars().filter(|ch| !ch.is_ascii_digit()).collect();
    let rest = after(hay, c);
    let ok = seps.windows(2).all(|w| w[0] == w[1])
        && !before(hay, c).is_some_and(|ch| ch == '.' || ch == 'v' || ch == '-')
        && !(rest.starts_with(['.', '-'])
            && rest[1..].starts_with(|ch: char| ch.is_alphanumeric()));
    if ok {
        "[REDACTED:phone]".to_string()
    } else {
        m.to_string()
    }
}

fn phone_national(hay: &str, c: &Captures) -> String {
    let m = &c[0];
    let rest = after(hay, c);
    // Part of a longer dotted, dashed or slashed number (a version, a date,
    // a path): not a phone number.
    let glued_before = before(hay, c).is_some_and(|ch| matches!(ch, '.' | '-' | '/'));
    let glued_after =
        rest.starts_with(['.', '-', '/']) && rest[1..].starts_with(|ch: char| ch.is_ascii_digit());
    let ok = (9..=15).contains(&digits(m)) && !glued_before && !glued_after && !DATE.is_match(m);
    if ok {
        "[REDACTED:phone]".to_string()
    } else {
        m.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRETS: &[(&str, &str)] = &[
        (
            "GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "github_token",
        ),
        (
            "using github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "github_token",
        ),
        (
            "gho_16C7e42F292c6912E7710c838347Ae178B4a and ghs_16C7e42F292c6912E7710c8",
            "github_token",
        ),
        ("Authorization: Bearer abc.def-ghi_jkl", "authorization"),
        (
            "curl -H 'Authorization: token 0123456789abcdef0123'",
            "authorization",
        ),
        ("sent bearer eyJhbGciOiJIUzI1NiJ9xyz", "token"),
        ("use token 4f3c2b1a0d9e8f7a6b5c4d3e2f1a0b9c8d7e", "token"),
        ("aws key AKIAIOSFODNN7EXAMPLE loaded", "aws_key"),
        ("DB_PASSWORD=hunter2", "secret"),
        ("export SECRET_KEY_BASE='abc def'", "secret"),
        ("GET /cb?code=1&token=s3cr3t&x=1", "secret"),
        ("https://hooks.example/x?api_key=zzz", "secret"),
        ("{\"password\": \"pa ss\"}", "secret"),
        ("mysqldump --password s3cret db", "secret"),
        ("client_secret: abcdef", "secret"),
        ("PHPSESSID=abc; sessionid=xyz", "secret"),
        ("< Set-Cookie: session=abc123; Path=/", "cookie"),
        (
            "DATABASE_URL=postgres://app:pa55word@db.internal:5432/app",
            "credentials",
        ),
        (
            "git clone https://x-access-token:abc123@github.com/o/r",
            "credentials",
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----",
            "private_key",
        ),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",
            "private_key",
        ),
        ("contact jane.doe+ops@example.co.uk now", "email"),
        ("to=jane%40example.com", "email"),
        ("call +49 151 1234 5678", "phone"),
        ("call +1 (555) 123-4567", "phone"),
        ("sms +4915112345678.", "phone"),
        ("office (555) 123-4567", "phone"),
        ("us 555-123-4567", "phone"),
        ("de 030 1234567", "phone"),
        ("fr 06 12 34 56 78", "phone"),
        ("fr 06.12.34.56.78", "phone"),
        ("mobile 01511234567", "phone"),
        ("connect to 10.0.0.5:5432 failed", "ipv4"),
        ("client 203.0.113.9 denied", "ipv4"),
        ("four parts 1.2.3.4", "ipv4"),
        ("peer 2001:db8::1 reset", "ipv6"),
        ("peer [fe80::1ff:fe23:4567:890a%eth0]:80", "ipv6"),
        ("mapped ::ffff:192.0.2.128 ok", "ipv6"),
        ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "ipv6"),
        ("nic 00:1a:2b:3c:4d:5e up", "mac"),
    ];

    const CLEAN: &[&str] = &[
        "deploying web 1.2.3 -> v10.0.1-rc.1 (2.0.0-beta.2+build.5)",
        "2026-11-22T12:30:45.123456789Z INFO started at 12:30:45",
        "date 2026-11-22 22.11.2026 11/22/2026",
        "deploy 3f9a0c1d2e4b5a69 and 0123456789012345",
        "sha256:2151b604e3429bff440b9fbc03eb3617bc2603cda96c95b9bb05277f9ddba255",
        "digest 0612345678901234567890123456789012345678901234567890123456789012",
        "/srv/web/releases/1.4.0/storage/logs/laravel-2026-11-22.log",
        "listening on :8080, health http://127.0.0.1:8080/health and [::1]:443 0.0.0.0:80",
        "port 5432 pid 12345 took 1234567 us, uptime 1763812345",
        "std::fs::read failed in crate::daemon::report at src/daemon/report.rs:120:5",
        "token_env = \"GITHUB_TOKEN\" max_tokens=100 tokens: 5",
        "password authentication failed for user \"app\"",
        "git@github.com:owner/repo is cloned via ssh://git@github.com/o/r",
        "npm ERR! lodash@4.17.21 @types/node@20.11.5 +12 -3 files",
        "exit code 1, 3 retries, +02:00 offset, 1.2.3.4.5 is not an address",
        "elapsed 00:01:02.345, ratio 0.123",
        "Error: Tokens expired; secret rotation pending",
    ];

    #[test]
    fn each_kind_is_redacted() {
        for (line, kind) in SECRETS {
            let out = redact(line);
            assert!(
                out.contains(&format!("[REDACTED:{kind}]")),
                "{line:?} -> {out:?}, expected kind {kind}"
            );
        }
    }

    #[test]
    fn secret_values_are_gone() {
        for s in [
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "hunter2",
            "s3cr3t",
            "pa55word",
            "MIIEpAIBAAKCAQEA",
            "b3BlbnNzaC1rZXktdjEAAAAA",
            "jane.doe",
            "1234 5678",
            "10.0.0.5",
            "2001:db8::1",
            "AKIAIOSFODNN7EXAMPLE",
            "abc.def-ghi_jkl",
            "abc123",
            "4567:890a",
        ] {
            let all = SECRETS
                .iter()
                .map(|(l, _)| *l)
                .collect::<Vec<_>>()
                .join("\n");
            assert!(!redact(&all).contains(s), "{s:?} survived");
        }
        // The port stays: it says which service failed.
        assert_eq!(redact("10.0.0.5:5432"), "[REDACTED:ipv4]:5432");
        assert_eq!(
            redact("peer 2001:db8::1: refused"),
            "peer [REDACTED:ipv6]: refused"
        );
        assert_eq!(
            redact("Authorization: Bearer abc.def"),
            "Authorization: Bearer [REDACTED:authorization]"
        );
    }

    #[test]
    fn useful_text_is_left_alone() {
        for line in CLEAN {
            assert_eq!(redact(line), *line, "false positive");
        }
    }

    #[test]
    fn mixed_lines_redact_only_what_they_must_and_redaction_is_idempotent() {
        let mut mixed = Vec::new();
        // Single-line secrets: an unterminated key block runs to the end.
        let one_line = SECRETS.iter().filter(|(s, _)| !s.contains('\n'));
        for (i, (secret, _)) in one_line.enumerate() {
            let clean = CLEAN[i % CLEAN.len()];
            mixed.push(format!("{clean} | {secret}"));
            mixed.push(format!("{secret} | {clean}"));
        }
        let text = mixed.join("\n");
        let once = redact(&text);
        assert_eq!(redact(&once), once);
        for line in once.lines() {
            assert!(line.contains("[REDACTED:"), "nothing redacted in {line:?}");
        }
        // The useful parts survive next to a secret.
        for keep in [
            "1.2.3",
            "v10.0.1-rc.1",
            "2026-11-22",
            "3f9a0c1d2e4b5a69",
            ":8080",
            "/srv/web/releases/1.4.0",
        ] {
            assert!(once.contains(keep), "{keep} lost");
        }
        for (line, _) in SECRETS {
            assert_eq!(redact(&redact(line)), redact(line));
        }
    }

    #[test]
    fn private_keys_go_whole_even_when_the_begin_line_is_cut_off() {
        let text = "before\nMIIEpAIBAAKCAQEAx\nqwertyuiopasdfgh\n-----END PRIVATE KEY-----\nafter";
        assert_eq!(redact(text), "before\n[REDACTED:private_key]\nafter");
        let text = "a\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\nb";
        assert_eq!(redact(text), "a\n[REDACTED:private_key]\nb");
        let pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYH\n-----END PUBLIC KEY-----";
        assert_eq!(redact(pem), pem);
    }
}
