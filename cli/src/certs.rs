//! `nvme-gw certs init|issue`: the certificates of gwmon's mutual TLS, made offline.
//!
//! One CA per cluster (`init`), and from it one certificate per monitor, gateway, operator,
//! host agent and storage backend (`issue`). A certificate names its holder in a URI SAN,
//! `gwmon://ROLE/NAME`: the monitors authorize by that URI, so each name is checked
//! here with the rules the monitors apply to the ids it carries (gwmon-proto's domain
//! types), and no certificate is issued for a name a monitor would refuse.
//!
//! Only monitors are servers (everyone dials them, and they dial each other), so only their
//! certificates carry serverAuth and the DNS names and addresses they are dialled by.
//! Everything is ECDSA P-256 through rcgen and ring: no OpenSSL, nothing to build but Rust
//! and ring's own C.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use gwmon_proto::domain::{GatewayId, Group, Invalid, MonitorId, Pool};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

use crate::args::{CertsCommand, Format};
use crate::error::CliError;
use crate::view::certs::CertOut;
use crate::view::print;

/// `--dir` when not given: a directory of the current one, created by `init`.
pub const DEFAULT_DIR: &str = "gwmon-certs";
/// The CA's files within `--dir`.
const CA_STEM: &str = "ca";
/// The longest `--days` accepted (100 years): keeps every date within what X.509 and the
/// date arithmetic below can represent, so adding it cannot overflow.
pub const MAX_DAYS: i64 = 36_500;
/// How far before the moment of issue a certificate becomes valid: a peer whose clock lags
/// the issuing host's by a few minutes accepts a certificate issued just now.
const BACKDATE: Duration = Duration::minutes(5);
/// A monitor certificate's DNS names and addresses when no `--san` is given: enough for a
/// single-host trial, where everything dials 127.0.0.1 or localhost.
const DEFAULT_SANS: [&str; 2] = ["localhost", "127.0.0.1"];

/// Who holds a certificate, the first part of its `gwmon://ROLE/NAME` identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// A monitor, named by its id (`--node-id`); the only server role.
    Monitor,
    /// A gateway, named POOL/GROUP/ID (`rbd//gw1` in Ceph's default group).
    Gateway,
    /// An operator or tool allowed to change the map.
    Admin,
    /// An operator or tool allowed to read only.
    Reader,
    /// A compute node's agent (replica health of its volumes).
    Host,
    /// A storage backend (registers volumes and their replicas).
    Backend,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Monitor => "monitor",
            Role::Gateway => "gateway",
            Role::Admin => "admin",
            Role::Reader => "reader",
            Role::Host => "host",
            Role::Backend => "backend",
        }
    }

    /// Monitors serve every other role and dial each other (Raft), so they are both; every
    /// other role only ever dials a monitor.
    fn extended_key_usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Role::Monitor => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a certificate could not be made. Each message is one line naming the file or the
/// argument at fault and, where there is one, what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Never overwritten: a key replaced by mistake cannot be recovered, and a CA replaced
    /// invalidates every certificate it signed.
    #[error("cannot write {}: file exists; remove it first or use another --dir", path.display())]
    Exists { path: PathBuf },
    /// `issue` before `init`, or with a `--dir` other than the one `init` used.
    #[error(
        "cannot read {}: no such file; run `nvme-gw certs init --dir {}` first",
        path.display(),
        dir.display()
    )]
    NoCa { path: PathBuf, dir: PathBuf },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{} is not a PEM {what}", path.display())]
    NotPem { path: PathBuf, what: &'static str },
    /// Certificates signed with another key would carry the CA's name and fail to verify.
    #[error(
        "{} is not the private key of {}; both must come from the same `nvme-gw certs init`",
        key.display(),
        cert.display()
    )]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    /// A certificate is worth nothing once its CA has expired.
    #[error(
        "cannot issue a certificate valid for {days} days: the CA in {} expires at {expires}; \
         pass a smaller --days or create a new CA",
        path.display()
    )]
    OutlivesCa {
        days: u32,
        path: PathBuf,
        expires: String,
    },
    #[error("invalid {role} name {name:?}: {reason}")]
    Name {
        role: Role,
        name: String,
        reason: String,
    },
    #[error(
        "--san is only for monitor certificates (monitors are the only servers); {0} \
         certificates name their holder by the gwmon:// URI alone"
    )]
    SanNotAllowed(Role),
    #[error(
        "invalid --san {0:?}: neither an IP address nor a DNS name (labels of 1 to 63 ASCII \
         letters, digits and '-', separated by dots)"
    )]
    BadSan(String),
    /// rcgen or ring failed (no randomness, say); nothing the arguments can change.
    #[error("cannot generate the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Run `nvme-gw certs ...` and print what was written.
pub fn run(command: CertsCommand, format: Format, out: &mut dyn Write) -> Result<(), CliError> {
    let written = match command {
        CertsCommand::Init { dir, days } => init(&dir, days)?,
        CertsCommand::Issue {
            role,
            name,
            dir,
            days,
            sans,
        } => issue(role, &name, &dir, days, &sans)?,
    };
    Ok(print(out, &written, format)?)
}

/// Create the CA: a self-signed certificate that may sign leaf certificates only (path
/// length 0), and its key.
fn init(dir: &Path, days: u32) -> Result<CertOut, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name("gwmon CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, days);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    create_dir(dir)?;
    let (cert_path, key_path) = write_pair(dir, CA_STEM, &key.serialize_pem(), &cert.pem())?;
    Ok(CertOut::new(cert_path, key_path, "gwmon CA", None, &params))
}

/// Issue a leaf certificate for `role` `name`, signed by the CA in `dir`. Every argument is
/// checked before the CA is read, and the CA before anything is written.
fn issue(
    role: Role,
    name: &str,
    dir: &Path,
    days: u32,
    sans: &[String],
) -> Result<CertOut, CertError> {
    let holder = Holder::parse(role, name)?;
    let names = server_names(role, sans)?;
    let ca = Ca::load(dir)?;
    let params = leaf_params(&holder, names, days)?;
    ca.check_covers(params.not_after, days)?;
    // The serial is rcgen's: a hash of the new key, unique as the key is.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    let (cert_path, key_path) =
        write_pair(dir, &holder.file_stem(), &key.serialize_pem(), &cert.pem())?;
    Ok(CertOut::new(
        cert_path,
        key_path,
        &holder.common_name(),
        Some(holder.uri()),
        &params,
    ))
}

/// A leaf: not a CA, signing only (ECDSA has no key encipherment), identified by its URI
/// first and then by the names a monitor is dialled by.
fn leaf_params(
    holder: &Holder,
    names: Vec<SanType>,
    days: u32,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(&holder.common_name());
    params.subject_alt_names = std::iter::once(SanType::URI(Ia5String::try_from(holder.uri())?))
        .chain(names)
        .collect();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = holder.role.extended_key_usages();
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, days);
    Ok(params)
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// From [`BACKDATE`] ago to `days` from now.
fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    // Cannot overflow: clap bounds `days` by MAX_DAYS, far below time's year 9999.
    params.not_after = now + Duration::days(i64::from(days));
}

/// A certificate's holder: its role and its name, checked for that role.
struct Holder {
    role: Role,
    /// As written in the URI: a monitor's id in canonical decimal (`007` is `7`).
    name: String,
}

impl Holder {
    fn parse(role: Role, name: &str) -> Result<Holder, CertError> {
        let refuse = |reason: String| CertError::Name {
            role,
            name: name.to_owned(),
            reason,
        };
        let canonical = match role {
            Role::Monitor => name
                .parse::<MonitorId>()
                .map(|id| id.to_string())
                .map_err(|e| {
                    refuse(format!(
                        "a monitor is named by its id (--node-id), which {e}"
                    ))
                })?,
            Role::Gateway => gateway_name(name)
                .map(|()| name.to_owned())
                .map_err(refuse)?,
            _ => name
                .parse::<GatewayId>()
                .map(String::from)
                .map_err(|e| refuse(e.to_string()))?,
        };
        Ok(Holder {
            role,
            name: canonical,
        })
    }

    /// The identity the monitors authorize by.
    fn uri(&self) -> String {
        format!("gwmon://{}/{}", self.role, self.name)
    }

    /// For people reading the certificate (`openssl x509 -subject`); never authorized by.
    fn common_name(&self) -> String {
        format!("{} {}", self.role, self.name)
    }

    /// `ROLE-NAME` with each `/` of a gateway's name as `_`, so the files stay in `--dir`.
    fn file_stem(&self) -> String {
        format!("{}-{}", self.role, self.name.replace('/', "_"))
    }
}

/// A gateway's name is `POOL/GROUP/ID`, each part by its own rules; none of them allows
/// `/`, so the split is unambiguous.
fn gateway_name(name: &str) -> Result<(), String> {
    let parts: Vec<&str> = name.split('/').collect();
    let [pool, group, id] = parts[..] else {
        return Err(
            "expected POOL/GROUP/ID, e.g. rbd/grp1/gw1 (rbd//gw1 in the default group)".to_owned(),
        );
    };
    let part = |what: &str, e: Invalid| format!("its {what} {e}");
    pool.parse::<Pool>().map_err(|e| part("pool", e))?;
    group.parse::<Group>().map_err(|e| part("group", e))?;
    id.parse::<GatewayId>().map_err(|e| part("id", e))?;
    Ok(())
}

/// The DNS names and addresses a monitor is dialled by; none for the other roles, which
/// are never dialled.
fn server_names(role: Role, sans: &[String]) -> Result<Vec<SanType>, CertError> {
    if role != Role::Monitor {
        return match sans.first() {
            None => Ok(Vec::new()),
            Some(_) => Err(CertError::SanNotAllowed(role)),
        };
    }
    let given: Vec<&str> = if sans.is_empty() {
        DEFAULT_SANS.to_vec()
    } else {
        sans.iter().map(String::as_str).collect()
    };
    let mut names = Vec::new();
    for s in given {
        let san = san(s)?;
        if !names.contains(&san) {
            names.push(san);
        }
    }
    Ok(names)
}

/// An IP address if it parses as one, else a DNS name.
fn san(s: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if !is_dns_name(s) {
        return Err(CertError::BadSan(s.to_owned()));
    }
    Ok(SanType::DnsName(Ia5String::try_from(s)?))
}

/// A host name as TLS clients match it: dot-separated labels of 1 to 63 letters, digits
/// and hyphens, not starting or ending with a hyphen, 253 bytes at most. Checked here so a
/// typo is refused now rather than when the first client fails to connect.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The CA of a `--dir`: what signs, and until when it is valid.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    not_after: OffsetDateTime,
    cert_path: PathBuf,
}

impl Ca {
    /// Load `ca.pem` and `ca.key`, checking that the key is the certificate's.
    fn load(dir: &Path) -> Result<Ca, CertError> {
        let cert_path = dir.join(format!("{CA_STEM}.pem"));
        let key_path = dir.join(format!("{CA_STEM}.key"));
        let cert_text = std::fs::read_to_string(&cert_path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => CertError::NoCa {
                path: cert_path.clone(),
                dir: dir.to_owned(),
            },
            _ => io_error("read", &cert_path, e),
        })?;
        let key_text =
            std::fs::read_to_string(&key_path).map_err(|e| io_error("read", &key_path, e))?;
        let not_pem = |path: &Path, what| CertError::NotPem {
            path: path.to_owned(),
            what,
        };
        let key = KeyPair::from_pem(&key_text).map_err(|_| not_pem(&key_path, "private key"))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_text.as_bytes())
            .map_err(|_| not_pem(&cert_path, "certificate"))?;
        let cert = pem
            .parse_x509()
            .map_err(|_| not_pem(&cert_path, "certificate"))?;
        if *cert.public_key().subject_public_key.data != *key.public_key_raw() {
            return Err(CertError::KeyMismatch {
                key: key_path,
                cert: cert_path,
            });
        }
        let not_after = cert.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(&pem.contents.as_slice().into(), key)
            .map_err(|_| not_pem(&cert_path, "certificate"))?;
        Ok(Ca {
            issuer,
            not_after,
            cert_path,
        })
    }

    /// Refuse a certificate that would outlive the CA (or a CA already expired).
    fn check_covers(&self, not_after: OffsetDateTime, days: u32) -> Result<(), CertError> {
        if not_after <= self.not_after {
            return Ok(());
        }
        Err(CertError::OutlivesCa {
            days,
            path: self.cert_path.clone(),
            expires: utc(self.not_after),
        })
    }
}

/// `t` as the CLI prints every timestamp (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn utc(t: OffsetDateTime) -> String {
    let secs = u64::try_from(t.unix_timestamp()).unwrap_or(0);
    crate::time::utc(secs.saturating_mul(1000))
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> CertError {
    CertError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Create `dir` (and its parents) readable by its owner only, as it will hold keys. An
/// existing directory is used as it is.
fn create_dir(dir: &Path) -> Result<(), CertError> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| io_error("create", dir, e))
}

/// Write `STEM.key` (mode 0600) and `STEM.pem` (0644) in `dir`, both or neither: neither
/// may exist already, and a failure removes what this call created.
fn write_pair(
    dir: &Path,
    stem: &str,
    key_pem: &str,
    cert_pem: &str,
) -> Result<(PathBuf, PathBuf), CertError> {
    let key_path = dir.join(format!("{stem}.key"));
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_file = create_new(&key_path, 0o600)?;
    let written = create_new(&cert_path, 0o644).and_then(|cert_file| {
        let done = write_all(key_file, &key_path, key_pem)
            .and_then(|()| write_all(cert_file, &cert_path, cert_pem));
        if done.is_err() {
            // Best effort: the error being reported is the write's.
            let _ = std::fs::remove_file(&cert_path);
        }
        done
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    Ok((cert_path, key_path))
}

/// Create `path`, which must not exist, with `mode` (less the umask) from the start: a key
/// is never readable by others, not even between its creation and a chmod.
fn create_new(path: &Path, mode: u32) -> Result<File, CertError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => CertError::Exists {
            path: path.to_owned(),
        },
        _ => io_error("create", path, e),
    })
}

fn write_all(mut file: File, path: &Path, text: &str) -> Result<(), CertError> {
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_by_role() {
        let gw = Holder::parse(Role::Gateway, "rbd//gw1").expect("default group");
        assert_eq!(gw.uri(), "gwmon://gateway/rbd//gw1");
        assert_eq!(gw.file_stem(), "gateway-rbd__gw1");
        let mon = Holder::parse(Role::Monitor, "007").expect("id");
        assert_eq!(mon.uri(), "gwmon://monitor/7");
        assert_eq!(mon.common_name(), "monitor 7");
        for (role, bad) in [
            (Role::Gateway, "rbd/gw1"),
            (Role::Gateway, "rbd/g/gw1/x"),
            (Role::Gateway, "/g/gw1"),
            (Role::Gateway, "rbd/g/-x"),
            (Role::Monitor, "0"),
            (Role::Monitor, "one"),
            (Role::Admin, ""),
            (Role::Admin, "a/b"),
            (Role::Host, ".."),
        ] {
            let e = Holder::parse(role, bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.starts_with(&format!("invalid {role} name {bad:?}: "))),
                "{role} {bad:?}: {e:?}"
            );
        }
    }

    #[test]
    fn dns_names_and_addresses() {
        assert!(is_dns_name("mon1.example"));
        assert!(is_dns_name("localhost"));
        for bad in [
            "",
            "a..b",
            "-a",
            "a-",
            "a b",
            "a_b",
            "[::1]",
            &"x".repeat(64),
        ] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
        assert_eq!(
            san("::1").ok(),
            Some(SanType::IpAddress("::1".parse().expect("ip")))
        );
        assert!(matches!(san("é"), Err(CertError::BadSan(_))));
    }

    #[test]
    fn only_monitors_take_sans_and_get_defaults() {
        assert_eq!(
            server_names(Role::Monitor, &[]).map(|v| v.len()).ok(),
            Some(2)
        );
        let twice = ["a".to_owned(), "a".to_owned()];
        assert_eq!(
            server_names(Role::Monitor, &twice).map(|v| v.len()).ok(),
            Some(1)
        );
        assert!(server_names(Role::Gateway, &[]).is_ok_and(|v| v.is_empty()));
        assert!(matches!(
            server_names(Role::Host, &twice),
            Err(CertError::SanNotAllowed(Role::Host))
        ));
    }
}
