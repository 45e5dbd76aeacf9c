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
    if parsed.port_u16().is_none() {
        return Err(format!("monitor address {addr:?} has no port"));
    }
    Ok(())
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
    }
}
