//! Monitor addresses as clients take them (`--monitors host:port,...`): the one place that
//! turns one into a gRPC URI and checks it can be dialled, for every client crate.

/// A monitor address as a URI: `host:port` gets the `http://` scheme gRPC needs; an address
/// that already has a scheme is kept.
pub fn uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// Whether `addr` can be dialled at all: checked when flags are read, so a typo is a usage
/// error and not a connection failure repeated forever.
pub fn check_addr(addr: &str) -> Result<(), String> {
    if addr.trim().is_empty() {
        return Err("an empty monitor address".to_owned());
    }
    let parsed = uri(addr)
        .parse::<tonic::codegen::http::Uri>()
        .map_err(|e| format!("monitor address {addr:?} is not host:port: {e}"))?;
    match parsed.port_u16() {
        Some(0) => Err(format!(
            "monitor address {addr:?}: port 0 cannot be dialled"
        )),
        Some(_) => Ok(()),
        None => {
            // The URI parser drops a port it cannot read as 16 bits: say which it is.
            let written = parsed
                .authority()
                .and_then(|a| a.as_str().rsplit_once(':'))
                .map(|(_, p)| p)
                .filter(|p| {
                    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !p.contains(']')
                });
            Err(match written {
                Some(p) => {
                    format!("monitor address {addr:?}: port {p} is out of range (1 to 65535)")
                }
                None => format!("monitor address {addr:?} has no port"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_a_scheme_and_need_a_port() {
        assert_eq!(uri("10.0.0.1:7400"), "http://10.0.0.1:7400");
        assert_eq!(uri("https://m1:7400"), "https://m1:7400");
        assert!(check_addr("m1:7400").is_ok());
        assert!(check_addr("[::1]:7400").is_ok());
        assert!(check_addr("m1").is_err_and(|e| e.contains("no port")));
        assert!(check_addr(" ").is_err_and(|e| e.contains("empty")));
        assert!(check_addr("a b:1").is_err());
        assert_eq!(
            check_addr("127.0.0.1:99999"),
            Err(
                "monitor address \"127.0.0.1:99999\": port 99999 is out of range (1 to 65535)"
                    .into()
            )
        );
        assert!(check_addr("m1:0").is_err_and(|e| e.contains("port 0")));
        assert!(check_addr("[::1]").is_err_and(|e| e.contains("no port")));
    }
}
