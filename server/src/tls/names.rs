//! A certificate's subject as an RFC 4514 string, for the tls extension's `client_cert_name`.

use x509_parser::prelude::{FromDer, X509Certificate};

/// Short names RFC 4514 §3 requires (and a few more every tool knows).
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

/// RFC 4514 §2.4 escaping of an attribute value.
fn escape(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
}

/// The subject of a DER certificate as RFC 4514 writes it (last RDN first); empty when the
/// certificate does not parse.
pub fn subject(der: &[u8]) -> String {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return String::new();
    };
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter() {
        let mut parts = Vec::new();
        for attr in rdn.iter() {
            let oid = attr.attr_type().to_id_string();
            let mut s = String::new();
            match (short_name(&oid), attr.as_str()) {
                (Some(name), Ok(value)) => {
                    s.push_str(name);
                    s.push('=');
                    escape(value, &mut s);
                }
                // Unknown type or a value that is no string: dotted OID and the DER in hex.
                _ => {
                    s.push_str(&oid);
                    s.push_str("=#");
                    for b in attr.attr_value().data.iter() {
                        s.push_str(&format!("{b:02x}"));
                    }
                }
            }
            parts.push(s);
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn values_are_escaped_as_rfc_4514_says() {
        let mut s = String::new();
        escape(" a,b+c\"d ", &mut s);
        assert_eq!(s, "\\ a\\,b\\+c\\\"d\\ ");
        let mut s = String::new();
        escape("#x", &mut s);
        assert_eq!(s, "\\#x");
    }
}
