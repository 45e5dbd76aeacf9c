//! The server half of the Raft transport: the tonic `RaftService` in front of a local
//! [`Raft`]. It only decodes, calls `Raft` and encodes; all Raft logic stays in openraft.
//!
//! The reply payload is the whole `Result` of the `Raft` call, so a Raft error (not leader,
//! stopped, a snapshot chunk out of order) reaches the caller as openraft's `RemoteError`
//! and drives openraft's own handling there. gRPC statuses are kept for what is not a Raft
//! answer: a payload this build cannot read (`InvalidArgument`) or a reply it cannot encode
//! (`Internal`).
//!
//! Only monitors may call this service: `node.rs` serves it alone on the peer port
//! (`peer_listen`), behind the authorization that admits monitor certificates only, and
//! never on the client port gateways, agents and operators use.

use gwmon_proto::v1::raft_service_server::{RaftService, RaftServiceServer};
use gwmon_proto::v1::{FeaturesReply, FeaturesRequest, RaftReply, RaftRequest};
use tonic::{Request, Response, Status};

use super::network::MAX_MESSAGE_BYTES;
use super::Raft;
use crate::codec::{self, Versioned};

/// The `RaftService` implementation over a local [`Raft`].
#[derive(Clone)]
pub struct RaftGrpc {
    raft: Raft,
    /// The feature level this monitor answers it supports.
    supported: u32,
}

impl RaftGrpc {
    pub fn new(raft: Raft, supported: u32) -> Self {
        RaftGrpc { raft, supported }
    }
}

/// The service to add to the monitor's tonic server, with the message limits set to
/// [`MAX_MESSAGE_BYTES`] both ways (tonic's 4 MiB default would refuse large batches).
/// `supported` is the feature level it says it applies ([`crate::map::features::SUPPORTED`]
/// but in tests of mixed releases).
pub fn raft_service(raft: Raft, supported: u32) -> RaftServiceServer<RaftGrpc> {
    RaftServiceServer::new(RaftGrpc::new(raft, supported))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Decode a request payload; an unreadable one is the caller's fault, reported in one line
/// (a peer of another release, or not a monitor at all).
#[allow(clippy::result_large_err)] // tonic::Status is the service's error type.
fn decode_request<T: Versioned>(request: Request<RaftRequest>) -> Result<T, Status> {
    codec::decode(&request.into_inner().payload)
        .map_err(|e| Status::invalid_argument(one_line(&e.to_string())))
}

#[allow(clippy::result_large_err)] // tonic::Status is the service's error type.
fn encode_reply<T: Versioned>(reply: &T) -> Result<Response<RaftReply>, Status> {
    codec::encode(reply)
        .map(|payload| Response::new(RaftReply { payload }))
        .map_err(|e| Status::internal(one_line(&e.to_string())))
}

/// gRPC status messages travel in a header: keep them to one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc = decode_request(request)?;
        let reply: super::network::AppendEntriesReply = self.raft.append_entries(rpc).await;
        encode_reply(&reply)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = decode_request(request)?;
        let reply: super::network::VoteReply = self.raft.vote(rpc).await;
        encode_reply(&reply)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc = decode_request(request)?;
        let reply: super::network::InstallSnapshotReply = self.raft.install_snapshot(rpc).await;
        encode_reply(&reply)
    }

    async fn features(
        &self,
        _request: Request<FeaturesRequest>,
    ) -> Result<Response<FeaturesReply>, Status> {
        Ok(Response::new(FeaturesReply {
            supported: self.supported,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::raft::VoteRequest;

    #[test]
    fn undecodable_payload_is_invalid_argument_in_one_line() {
        for payload in [
            vec![],
            vec![1u8],
            vec![99u8, 1, 2, 3],
            vec![1u8, 0xff, 0xff],
        ] {
            let status = decode_request::<VoteRequest<u64>>(Request::new(RaftRequest { payload }))
                .err()
                .map(|s| (s.code(), s.message().to_string()));
            let Some((code, message)) = status else {
                panic!("garbage decoded as a vote request");
            };
            assert_eq!(code, tonic::Code::InvalidArgument);
            assert!(!message.contains('\n'), "{message}");
            assert!(!message.is_empty());
        }
    }

    #[test]
    fn one_line_collapses_whitespace() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
