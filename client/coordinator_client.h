// The client daemon's only connection to the coordinator: a thin wrapper over
// the generated stub that puts a deadline on every call and turns
// grpc::Status into absl::Status. A peer service (for gossip methods) would
// sit beside this class, not inside it.
// Thread-safe: gRPC stubs may be used from several threads (the heartbeat
// thread and the work loop).
#ifndef FEDFWD_CLIENT_COORDINATOR_CLIENT_H_
#define FEDFWD_CLIENT_COORDINATOR_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/gossip.h"
#include "common/security.h"
#include "fedfwd.grpc.pb.h"

namespace fedfwd {

class CoordinatorClient {
 public:
  // A client for the coordinator at `address` (HOST:PORT) over `tls`,
  // sending `token` (when not empty) on every call. Errors: bad TLS flags or
  // unreadable certificate files; the connection itself is made lazily.
  static absl::StatusOr<std::unique_ptr<CoordinatorClient>> Connect(
      const std::string& address, const TlsOptions& tls,
      const std::string& token);

  CoordinatorClient(std::shared_ptr<grpc::Channel> channel, std::string token);

  absl::StatusOr<v1::JoinReply> Join(const v1::JoinRequest& req);
  // Long poll; the call's deadline is wait + a margin. `have_version`: the
  // model version the client holds (0: none), for seed-replay sync.
  absl::StatusOr<v1::Task> GetTask(uint32_t client_id,
                                   const std::string& session,
                                   absl::Duration wait,
                                   uint64_t have_version = 0);
  absl::Status Submit(const v1::TaskResult& result);
  // Streams an encoded model update (`encoding` as in update_codec.h) in
  // chunks of kSnapshotChunkBytes, `result` (jvp empty) as the header.
  absl::Status SubmitUpdate(const v1::TaskResult& result,
                            const std::string& encoding,
                            const std::string& bytes);
  // Streams the snapshot of `version` into `out` (expected_params floats),
  // verifying size, order and checksum; `step_state`: the optimizer state
  // that goes with that model instead (FetchModelRequest.step_state).
  absl::Status FetchModel(uint32_t client_id, const std::string& session,
                          uint64_t version, int64_t expected_params,
                          std::vector<float>* out, uint64_t* checksum,
                          bool step_state = false);
  // `relayed`, when given, gets the number of relayed peer messages that
  // wait for this client (decentralized runs).
  absl::Status Heartbeat(uint32_t client_id, const std::string& session,
                         int* relayed = nullptr);
  absl::Status Leave(uint32_t client_id, const std::string& session,
                     const std::string& reason);
  // --- Decentralized runs. ---
  // Sends the worker's parameters after result.round local steps (result's
  // client_id, session, round, loss, peer_bytes) for the consensus
  // evaluation; returns the live workers.
  absl::StatusOr<v1::PeerList> ReportModel(const v1::TaskResult& result,
                                           const std::vector<float>& params);
  // Hands a peer message the worker could not deliver to the coordinator.
  absl::Status RelayPush(const std::vector<v1::PeerChunk>& chunks);
  // The relayed messages waiting for this worker (each of expected_values
  // values, checked as PeerMessageAssembler does).
  absl::StatusOr<std::vector<PeerMessage>> FetchRelayed(
      uint32_t client_id, const std::string& session, int64_t expected_values);

  // The coordinator's progress (any credential role may ask), waiting at
  // most `deadline`.
  absl::StatusOr<v1::StatusReply> GetStatus(
      absl::Duration deadline = absl::Seconds(10));

 private:
  // A context with the token attached and a deadline `d` from now.
  void Prepare(grpc::ClientContext* ctx, absl::Duration d) const;

  std::shared_ptr<grpc::Channel> channel_;
  const std::string token_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

// A failed call worth retrying with backoff: the coordinator is unreachable,
// overloaded or shutting down (CANCELLED: it went away while our call was in
// flight; we never cancel our own calls).
bool IsRetryable(const absl::Status& s);
// The coordinator's answer that its run is over (FAILED_PRECONDITION "...
// the run is over"), to Join and to a decentralized worker's calls.
bool IsRunOver(const absl::Status& s);

// grpc::Status -> absl::Status with the same code and message.
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace fedfwd

#endif  // FEDFWD_CLIENT_COORDINATOR_CLIENT_H_
