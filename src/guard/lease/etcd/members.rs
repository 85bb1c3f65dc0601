//! The etcd members a lease talks to: one at a time, turning to the next on a failure.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use super::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};

/// The etcd members, a client for each, of which one is talked to at a time.
///
/// etcd-client spreads the requests of one client over all of its endpoints and fails
/// those that land on a member that is down (etcdv3/etcd-client#39), so that a cluster
/// with one member lost would fail a share of the requests. Here each request goes to
/// the current member, and the next member becomes current when a request fails.
#[derive(Clone)]
pub(super) struct Members {
    clients: Vec<Client>,
    current: usize,
}

impl Members {
    /// Makes the clients; they connect when first used.
    pub(super) async fn connect(endpoints: &[String]) -> Result<Self, etcd_client::Error> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            // etcd drops clients that ping more often than every 5 s.
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(2));
        let mut clients = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            clients.push(Client::connect([endpoint], Some(options.clone())).await?);
        }
        if clients.is_empty() {
            return Err(etcd_client::Error::InvalidArgs("no etcd endpoints".into()));
        }
        Ok(Self {
            clients,
            current: 0,
        })
    }

    pub(super) fn client(&mut self) -> &mut Client {
        &mut self.clients[self.current]
    }

    /// A request to the current member failed: turns to the next.
    pub(super) fn next(&mut self) {
        self.current = (self.current + 1) % self.clients.len();
    }

    pub(super) fn count(&self) -> usize {
        self.clients.len()
    }

    /// Revokes, in the background, the leases of attempts whose answers were lost: one of
    /// them may hold the key, and would keep every holder out for its TTL.
    pub(super) fn revoke_in_background(&self, leases: Vec<i64>) {
        if leases.is_empty() {
            return;
        }
        let mut members = self.clone();
        tokio::spawn(async move {
            for lease in leases {
                let _ = members.revoke(lease).await;
            }
        });
    }

    /// Revokes `lease` through the first member that answers in time.
    pub(super) async fn revoke(&mut self, lease: i64) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..self.count() {
            match tokio::time::timeout(REQUEST_TIMEOUT, self.client().lease_revoke(lease)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(err)) => last = err.to_string(),
                Err(_) => last = "etcd did not answer in time".into(),
            }
            self.next();
        }
        Err(last)
    }
}
