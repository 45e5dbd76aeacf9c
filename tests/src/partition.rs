//! A network between monitors that a test can partition: every Raft connection from one
//! monitor to another goes through a [`Proxy`] of its own, so cutting a monitor off blocks
//! exactly its links to the other monitors (held bytes both ways, new connections refused),
//! while gateways and admins still reach it directly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gwmon_monitor::raft::network::{ConnectError, ConnectFuture, Connector, TcpConnector};

use crate::proxy::Proxy;

/// The relays, by (dialing monitor, dialed address), and who is cut off.
#[derive(Default)]
pub struct Partition {
    relays: tokio::sync::Mutex<BTreeMap<(u64, String), Arc<Proxy>>>,
    isolated: Mutex<Vec<u64>>,
    /// Monitor id by its address, to know both ends of a link.
    ids: Mutex<BTreeMap<String, u64>>,
}

impl Partition {
    pub fn new() -> Arc<Self> {
        Arc::new(Partition::default())
    }

    /// Which monitor listens where (known once the cluster has bound its listeners).
    pub fn learn(&self, addrs: &BTreeMap<u64, String>) {
        if let Ok(mut ids) = self.ids.lock() {
            *ids = addrs.iter().map(|(id, a)| (a.clone(), *id)).collect();
        }
    }

    /// The connector monitor `me` dials its peers with.
    pub fn connector(self: &Arc<Self>, me: u64) -> Arc<dyn Connector> {
        Arc::new(Link {
            me,
            net: self.clone(),
            tcp: TcpConnector::default(),
        })
    }

    fn cut(&self, a: u64, b: u64) -> bool {
        let isolated = self.isolated.lock().map(|v| v.clone()).unwrap_or_default();
        isolated.contains(&a) || isolated.contains(&b)
    }

    fn id_of(&self, addr: &str) -> u64 {
        self.ids
            .lock()
            .ok()
            .and_then(|ids| ids.get(addr).copied())
            .unwrap_or(0)
    }

    /// Cut monitor `id` off from every other monitor.
    pub async fn isolate(&self, id: u64) {
        if let Ok(mut v) = self.isolated.lock() {
            v.push(id);
        }
        self.apply().await;
    }

    /// Join every monitor again.
    pub async fn heal(&self) {
        if let Ok(mut v) = self.isolated.lock() {
            v.clear();
        }
        self.apply().await;
    }

    async fn apply(&self) {
        let relays = self.relays.lock().await;
        for ((from, addr), relay) in relays.iter() {
            if self.cut(*from, self.id_of(addr)) {
                relay.block();
            } else {
                relay.unblock();
            }
        }
    }
}

struct Link {
    me: u64,
    net: Arc<Partition>,
    tcp: TcpConnector,
}

impl Connector for Link {
    fn connect<'a>(&'a self, addr: &'a str) -> ConnectFuture<'a> {
        Box::pin(async move {
            let relay = {
                let mut relays = self.net.relays.lock().await;
                match relays.get(&(self.me, addr.to_owned())) {
                    Some(r) => r.clone(),
                    None => {
                        let r = Arc::new(Proxy::start(addr.to_owned()).await);
                        if self.net.cut(self.me, self.net.id_of(addr)) {
                            r.block();
                        }
                        relays.insert((self.me, addr.to_owned()), r.clone());
                        r
                    }
                }
            };
            if self.net.cut(self.me, self.net.id_of(addr)) {
                return Err(ConnectError::Refused {
                    addr: addr.to_owned(),
                    reason: "partitioned by the test".into(),
                });
            }
            self.tcp.connect(&relay.addr).await
        })
    }
}
