//! Certificate fingerprints and join strings: how nodes and the command line pin a farm's
//! self-signed certificate, with no certificate authority to set up and no "trust on first
//! use": the fingerprint travels with the token, in one string the farm prints.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The SHA-256 of a certificate's DER bytes, shown as 64 lowercase hexadecimal characters
/// (what `openssl x509 -fingerprint -sha256` prints, without its colons).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Reads a fingerprint: 64 hexadecimal characters, any case, optionally with colons
    /// between bytes (as OpenSSL prints them) and a `sha256:` or `SHA256 Fingerprint=`
    /// prefix (any case).
    pub fn parse(text: &str) -> Result<Fingerprint, String> {
        let trimmed = text.trim();
        // `sha256:`, or what OpenSSL prints (`SHA256 Fingerprint=`), in any case.
        let lower = trimmed.to_ascii_lowercase();
        let hex = ["sha256:", "sha256=", "sha256 fingerprint="]
            .iter()
            .find(|prefix| lower.starts_with(*prefix))
            .map_or(trimmed, |prefix| &trimmed[prefix.len()..]);
        let digits: Vec<u8> = hex.bytes().filter(|b| *b != b':').collect();
        let bad = || format!("`{text}` is not a SHA-256 fingerprint (64 hexadecimal characters)");
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            bytes[i] = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Fingerprint::parse(s)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Fingerprint::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The scheme of a join string.
pub const JOIN_SCHEME: &str = "corral://";

/// Everything a node or a person needs to reach a farm, in one string the farm prints:
/// `corral://HOST:PORT[,HOST:PORT...]?token=TOKEN&fp=FINGERPRINT[,FINGERPRINT...]`.
/// With fingerprints the farm is reached over HTTPS and its certificate must be one of
/// them; without, over plain HTTP (a farm on loopback, or one that chose no TLS).
#[derive(Clone, PartialEq, Eq)]
pub struct JoinString {
    /// `HOST:PORT` of each orchestrator of the farm.
    pub addresses: Vec<String>,
    pub token: Option<String>,
    pub fingerprints: Vec<Fingerprint>,
}

impl JoinString {
    /// True when `text` is meant as a join string (its scheme is `corral://`).
    pub fn is_join_string(text: &str) -> bool {
        text.trim().starts_with(JOIN_SCHEME)
    }

    /// Reads a join string; the error says what is wrong with it, never echoing a token.
    pub fn parse(text: &str) -> Result<JoinString, String> {
        let rest = text
            .trim()
            .strip_prefix(JOIN_SCHEME)
            .ok_or_else(|| format!("a join string starts with {JOIN_SCHEME}"))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.trim_end_matches('/');
        let mut addresses = Vec::new();
        for address in hosts.split(',') {
            let ok = address.rsplit_once(':').is_some_and(|(host, port)| {
                let name = |h: &str| {
                    !h.is_empty()
                        && h.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
                };
                // An IPv6 address only in brackets, as in a URL.
                let ipv6 = |h: &str| {
                    h.strip_prefix('[')
                        .and_then(|h| h.strip_suffix(']'))
                        .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
                };
                port.parse::<u16>().is_ok_and(|p| p > 0) && (name(host) || ipv6(host))
            });
            if !ok {
                // Not echoed: a mistyped `?` leaves the token in this part.
                return Err(
                    "an address in the join string is not HOST:PORT (a name or an address, and a port)"
                        .into(),
                );
            }
            addresses.push(address.to_string());
        }
        let mut token = None;
        let mut fingerprints = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "token" => {
                    let valid = !value.is_empty()
                        && value.len() <= 256
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if !valid || token.is_some() {
                        return Err("the join string's token is not a Corral token".into());
                    }
                    token = Some(value.to_string());
                }
                "fp" => {
                    for fp in value.split(',') {
                        fingerprints.push(Fingerprint::parse(fp)?);
                    }
                }
                _ => {
                    return Err(format!(
                        "the join string has `{key}`, which is neither token nor fp"
                    ))
                }
            }
        }
        Ok(JoinString {
            addresses,
            token,
            fingerprints,
        })
    }

    /// The farm's base URLs: `https://HOST:PORT` when the string pins certificates,
    /// `http://HOST:PORT` when it does not.
    pub fn bases(&self) -> Vec<String> {
        let scheme = if self.fingerprints.is_empty() {
            "http"
        } else {
            "https"
        };
        self.addresses
            .iter()
            .map(|a| format!("{scheme}://{a}"))
            .collect()
    }
}

impl fmt::Display for JoinString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{JOIN_SCHEME}{}", self.addresses.join(","))?;
        let mut sep = '?';
        if let Some(token) = &self.token {
            write!(f, "{sep}token={token}")?;
            sep = '&';
        }
        if !self.fingerprints.is_empty() {
            let fps: Vec<String> = self.fingerprints.iter().map(|f| f.to_string()).collect();
            write!(f, "{sep}fp={}", fps.join(","))?;
        }
        Ok(())
    }
}

impl fmt::Debug for JoinString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinString")
            .field("addresses", &self.addresses)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("fingerprints", &self.fingerprints)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_what_openssl_prints_and_show_plain_hex() {
        let fp = Fingerprint::of_der(b"certificate");
        let hex = fp.to_string();
        assert_eq!(hex.len(), 64);
        let colons: Vec<String> = hex
            .as_bytes()
            .chunks(2)
            .map(|p| String::from_utf8_lossy(p).to_uppercase())
            .collect();
        assert_eq!(Fingerprint::parse(&colons.join(":")), Ok(fp));
        assert_eq!(Fingerprint::parse(&format!("sha256:{hex}")), Ok(fp));
        assert_eq!(
            Fingerprint::parse(&format!("SHA256 Fingerprint={}", colons.join(":"))),
            Ok(fp)
        );
        assert!(Fingerprint::parse(&hex[..62]).is_err());
        assert!(Fingerprint::parse(&format!("{}zz", &hex[..62])).is_err());
    }

    #[test]
    fn join_strings_round_trip_and_choose_the_scheme() {
        let fp = Fingerprint::of_der(b"x");
        let text = format!("corral://farm.lan:4000,10.0.0.2:4000?token=corral_abc-_1&fp={fp}");
        let join = JoinString::parse(&text).unwrap();
        assert_eq!(join.addresses, ["farm.lan:4000", "10.0.0.2:4000"]);
        assert_eq!(join.token.as_deref(), Some("corral_abc-_1"));
        assert_eq!(join.fingerprints, [fp]);
        assert_eq!(
            join.bases(),
            ["https://farm.lan:4000", "https://10.0.0.2:4000"]
        );
        assert_eq!(join.to_string(), text);
        assert!(!format!("{join:?}").contains("corral_abc"));
        assert!(JoinString::parse("corral://render_01:4000").is_ok());
        let plain = JoinString::parse("corral://[::1]:4000").unwrap();
        assert_eq!(plain.bases(), ["http://[::1]:4000"]);
    }

    #[test]
    fn bad_join_strings_are_refused_without_echoing_the_token() {
        for bad in [
            "http://farm:4000",
            "corral://farm",
            "corral://farm:0",
            "corral://user@farm:4000",
            "corral://farm:4000/path?token=x",
            "corral://farm:4000?token=a b",
            "corral://farm:4000?token=a&token=b",
            "corral://farm:4000?fp=abc",
            "corral://farm:4000?evil=1",
            "corral://::1:4000",
            "corral://farm:4000&token=secret-in-host",
        ] {
            let err = JoinString::parse(bad).unwrap_err();
            assert!(
                !err.contains("a b") && !err.contains("secret"),
                "{bad}: {err}"
            );
        }
    }
}
