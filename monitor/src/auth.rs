//! Who is calling and what they may do: the one place that authorizes.
//!
//! With TLS every caller presents a certificate from the cluster's CA, and its identity is
//! the URI in it, `gwmon://ROLE/NAME` (what `nvme-gw certs issue` writes). [`Authorize`]
//! sits in front of every service: it reads the identity, checks the method against the
//! role ([`Access::allows`]), and leaves the [`Caller`] in the request's extensions, where a
//! service checks what only the message says: a gateway opens a session only as itself
//! ([`Caller::check_gateway`]), a host reports only for itself ([`Caller::check_host`]).
//! Without TLS (a loopback listener, or `insecure` by choice) the caller is
//! [`Caller::Anyone`] and everything is allowed, as before authentication existed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use gwmon_proto::domain::{GatewayId, Group, GroupKey, Pool};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The caller of a request, from its client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No TLS on this listener: nobody is authenticated and nothing is refused.
    Anyone,
    Monitor(u64),
    Gateway {
        key: GroupKey,
        id: GatewayId,
    },
    Admin(String),
    Reader(String),
    Host(String),
    Backend(String),
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Anyone => f.write_str("an unauthenticated caller"),
            Caller::Monitor(id) => write!(f, "gwmon://monitor/{id}"),
            Caller::Gateway { key, id } => {
                write!(f, "gwmon://gateway/{}/{}/{id}", key.pool, key.group)
            }
            Caller::Admin(n) => write!(f, "gwmon://admin/{n}"),
            Caller::Reader(n) => write!(f, "gwmon://reader/{n}"),
            Caller::Host(n) => write!(f, "gwmon://host/{n}"),
            Caller::Backend(n) => write!(f, "gwmon://backend/{n}"),
        }
    }
}

/// Why a request was refused: PERMISSION_DENIED, naming what was missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("permission denied: the client certificate names no gwmon:// identity (one URI SAN gwmon://ROLE/NAME, as `nvme-gw certs issue` writes)")]
    NoIdentity,
    #[error("permission denied: {method} needs {needs}; the caller is {caller}")]
    Role {
        method: String,
        needs: &'static str,
        caller: String,
    },
    #[error("permission denied: {caller} may open a session only as itself, not as gateway {key}/{gateway}")]
    NotThisGateway {
        caller: String,
        key: GroupKey,
        gateway: GatewayId,
    },
    #[error("permission denied: {caller} may act only for its own host, not for {host:?}")]
    NotThisHost { caller: String, host: String },
}

impl Caller {
    /// The identity in a certificate (DER): its one `gwmon://` URI SAN, parsed by role.
    /// `None` when there is none, several, or one no monitor would accept.
    pub fn from_certificate(der: &[u8]) -> Option<Caller> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let sans = cert.subject_alternative_name().ok()??;
        let mut uris = sans.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with("gwmon://") => Some(*u),
            _ => None,
        });
        let uri = uris.next()?;
        if uris.next().is_some() {
            return None;
        }
        Caller::from_uri(uri)
    }

    /// `gwmon://ROLE/NAME`, each name checked by its role's rules.
    pub fn from_uri(uri: &str) -> Option<Caller> {
        let (role, name) = uri.strip_prefix("gwmon://")?.split_once('/')?;
        let plain = || name.parse::<GatewayId>().ok().map(String::from);
        match role {
            "monitor" => name
                .parse::<u64>()
                .ok()
                .filter(|id| *id != 0 && id.to_string() == name)
                .map(Caller::Monitor),
            "gateway" => {
                let mut parts = name.split('/');
                let (pool, group, id) = (parts.next()?, parts.next()?, parts.next()?);
                if parts.next().is_some() {
                    return None;
                }
                Some(Caller::Gateway {
                    key: GroupKey {
                        pool: pool.parse::<Pool>().ok()?,
                        group: group.parse::<Group>().ok()?,
                    },
                    id: id.parse().ok()?,
                })
            }
            "admin" => plain().map(Caller::Admin),
            "reader" => plain().map(Caller::Reader),
            "host" => plain().map(Caller::Host),
            "backend" => plain().map(Caller::Backend),
            _ => None,
        }
    }

    /// The caller a service reads from a request's extensions; [`Caller::Anyone`] where no
    /// [`Authorize`] layer put one (a transport without TLS).
    pub fn of<T>(req: &tonic::Request<T>) -> Caller {
        req.extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anyone)
    }

    /// A gateway session: only the gateway the certificate names may open it.
    pub fn check_gateway(&self, key: &GroupKey, gateway: &GatewayId) -> Result<(), Denied> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::Gateway { key: k, id } if k == key && id == gateway => Ok(()),
            other => Err(Denied::NotThisGateway {
                caller: other.to_string(),
                key: key.clone(),
                gateway: gateway.clone(),
            }),
        }
    }

    /// A host-side call about `host` (its NQN as sent): a host only for itself; admins and
    /// backends for anyone (an operator's `volume replace`, the backend in its place).
    pub fn check_host(&self, host: &str) -> Result<(), Denied> {
        match self {
            Caller::Host(name) if name != host => Err(Denied::NotThisHost {
                caller: self.to_string(),
                host: host.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// What a method needs. Every method of every service is listed in [`Access::of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Raft between monitors.
    Peer,
    /// A gateway's session.
    Session,
    /// A change to the map or the membership.
    AdminWrite,
    /// Reading the map, the membership, the events or the replica registry.
    Read,
    /// What a host agent does about its own volumes.
    HostSide,
    /// Asking for a replica's replacement: its host, an operator or the backend.
    Replace,
    /// What a storage backend does: volumes and the replicas it supplies.
    BackendSide,
}

impl Access {
    /// The access a gRPC path (`/gwmon.v1.AdminService/CreateGateway`) needs; `None` for a
    /// path no service serves (answered UNIMPLEMENTED by the router).
    pub fn of(path: &str) -> Option<Access> {
        let (service, method) = path.strip_prefix("/gwmon.v1.")?.split_once('/')?;
        let access = match (service, method) {
            ("RaftService", "AppendEntries" | "Vote" | "InstallSnapshot") => Access::Peer,
            ("GatewayService", "Session") => Access::Session,
            (
                "AdminService",
                "CreateGateway" | "DeleteGateway" | "SetAdminState" | "SetLocation" | "DisasterSet"
                | "DisasterClear" | "AddMonitor" | "RemoveMonitor" | "SetConfig" | "ExportSnapshot",
            ) => Access::AdminWrite,
            (
                "AdminService",
                "ShowGroup" | "ShowAll" | "Listeners" | "BlocklistList" | "Health"
                | "ClusterStatus" | "WatchEvents" | "GetConfig",
            ) => Access::Read,
            (
                "ReplicaService",
                "RegisterHost"
                | "Heartbeat"
                | "GetVolumeConnection"
                | "ReportReplicaStates"
                | "AcknowledgeReplacement",
            ) => Access::HostSide,
            ("ReplicaService", "RequestReplacement") => Access::Replace,
            (
                "ReplicaService",
                "CreateVolume"
                | "DeleteVolume"
                | "ExpandVolume"
                | "SupplyReplacement"
                | "CancelReplacement"
                | "ConfirmReplicaDeleted",
            ) => Access::BackendSide,
            ("ReplicaService", "ShowVolume" | "ListVolumes" | "ListHosts") => Access::Read,
            _ => return None,
        };
        Some(access)
    }

    /// Whether `caller` may call a method needing this access. Admins stand in for hosts
    /// and backends (the CLI's `volume` commands); monitors call nothing but Raft.
    pub fn allows(self, caller: &Caller) -> bool {
        use Caller as C;
        matches!(
            (self, caller),
            (_, C::Anyone)
                | (Access::Peer, C::Monitor(_))
                | (Access::Session, C::Gateway { .. })
                | (Access::AdminWrite, C::Admin(_))
                | (
                    Access::Read,
                    C::Admin(_) | C::Reader(_) | C::Host(_) | C::Backend(_)
                )
                | (Access::HostSide, C::Host(_) | C::Admin(_))
                | (Access::Replace, C::Host(_) | C::Admin(_) | C::Backend(_))
                | (Access::BackendSide, C::Backend(_) | C::Admin(_))
        )
    }

    /// Who may, for the refusal's message.
    fn needs(self) -> &'static str {
        match self {
            Access::Peer => "a monitor certificate (gwmon://monitor/ID)",
            Access::Session => "a gateway certificate (gwmon://gateway/POOL/GROUP/ID)",
            Access::AdminWrite => "an admin certificate (gwmon://admin/NAME)",
            Access::Read => "an admin, reader, host or backend certificate",
            Access::HostSide => "a host (gwmon://host/HOST_NQN) or admin certificate",
            Access::Replace => "a host, admin or backend certificate",
            Access::BackendSide => "a backend or admin certificate",
        }
    }
}

/// Decide a request: the caller it comes from, or why it is refused.
pub fn authorize(path: &str, caller: Option<Caller>) -> Result<Caller, Denied> {
    let caller = caller.ok_or(Denied::NoIdentity)?;
    match Access::of(path) {
        Some(access) if !access.allows(&caller) => Err(Denied::Role {
            method: path.trim_start_matches("/gwmon.v1.").to_owned(),
            needs: access.needs(),
            caller: caller.to_string(),
        }),
        _ => Ok(caller),
    }
}

/// The layer in front of every gRPC service of a listener; `tls` says whether the listener
/// authenticates its callers (without TLS every caller is [`Caller::Anyone`]).
#[derive(Debug, Clone, Copy)]
pub struct AuthorizeLayer {
    pub tls: bool,
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;
    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            tls: self.tls,
        }
    }
}

/// See [`AuthorizeLayer`].
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    tls: bool,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Authorize<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let caller = if self.tls {
            req.extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.peer_certs())
                .and_then(|certs| certs.first().and_then(|c| Caller::from_certificate(c)))
        } else {
            Some(Caller::Anyone)
        };
        match authorize(req.uri().path(), caller) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req))
            }
            Err(denied) => {
                let response = Status::from(crate::error::MonitorError::from(denied)).into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uri: &str) -> Caller {
        Caller::from_uri(uri).unwrap_or(Caller::Anyone)
    }

    #[test]
    fn identities_are_parsed_by_role() {
        assert_eq!(
            Caller::from_uri("gwmon://monitor/3"),
            Some(Caller::Monitor(3))
        );
        for bad in [
            "gwmon://monitor/0",
            "gwmon://monitor/03",
            "gwmon://gateway/rbd/gw1",
            "gwmon://gateway/rbd/g/gw1/x",
            "gwmon://admin/",
            "gwmon://admin/a/b",
            "gwmon://root/x",
            "https://admin/x",
        ] {
            assert_eq!(Caller::from_uri(bad), None, "{bad}");
        }
        let gw = caller("gwmon://gateway/rbd//gw1");
        assert_eq!(gw.to_string(), "gwmon://gateway/rbd//gw1");
    }

    #[test]
    fn every_role_gets_what_it_needs_and_no_more() {
        let admin = caller("gwmon://admin/alice");
        let reader = caller("gwmon://reader/bob");
        let gw = caller("gwmon://gateway/rbd//gw1");
        let mon = caller("gwmon://monitor/1");
        let host = caller("gwmon://host/nqn.2014-08.org.nvmexpress:uuid:1");
        let backend = caller("gwmon://backend/pool-a");
        let path = |m: &str| format!("/gwmon.v1.{m}");
        let allowed = |m: &str, c: &Caller| authorize(&path(m), Some(c.clone())).is_ok();
        for c in [&admin, &reader, &gw, &host, &backend] {
            assert!(!allowed("RaftService/Vote", c), "{c}");
        }
        assert!(allowed("RaftService/AppendEntries", &mon));
        for c in [&mon, &reader, &gw, &host, &backend] {
            assert!(!allowed("AdminService/DeleteGateway", c), "{c}");
            assert!(!allowed("AdminService/AddMonitor", c), "{c}");
        }
        assert!(allowed("AdminService/SetConfig", &admin));
        assert!(allowed("AdminService/ShowAll", &reader));
        assert!(!allowed("AdminService/ShowAll", &mon));
        assert!(allowed("GatewayService/Session", &gw));
        assert!(!allowed("GatewayService/Session", &admin));
        assert!(allowed("ReplicaService/Heartbeat", &host));
        assert!(!allowed("ReplicaService/SupplyReplacement", &host));
        assert!(allowed("ReplicaService/SupplyReplacement", &backend));
        assert!(!allowed("ReplicaService/Heartbeat", &reader));
        assert!(!allowed("ReplicaService/Heartbeat", &backend));
        assert!(allowed("ReplicaService/RequestReplacement", &backend));
        assert!(allowed("AdminService/Anything", &Caller::Anyone));
        let e = authorize(&path("AdminService/CreateGateway"), Some(reader)).err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("permission denied: AdminService/CreateGateway needs an admin certificate (gwmon://admin/NAME); the caller is gwmon://reader/bob")
        );
        assert_eq!(authorize("/x", None), Err(Denied::NoIdentity));
    }

    #[test]
    fn gateways_and_hosts_act_only_as_themselves() {
        let Caller::Gateway { key, id } = caller("gwmon://gateway/rbd//gw1") else {
            panic!("a gateway identity");
        };
        let gw = Caller::Gateway {
            key: key.clone(),
            id: id.clone(),
        };
        assert!(gw.check_gateway(&key, &id).is_ok());
        let other: GatewayId = "gw2".parse().expect("id");
        assert!(gw.check_gateway(&key, &other).is_err());
        assert!(caller("gwmon://admin/a").check_gateway(&key, &id).is_err());
        assert!(Caller::Anyone.check_gateway(&key, &other).is_ok());
        let host = caller("gwmon://host/h1");
        assert!(host.check_host("h1").is_ok());
        assert!(host.check_host("h2").is_err());
        assert!(caller("gwmon://admin/a").check_host("h2").is_ok());
    }
}
