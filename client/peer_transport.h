// The client daemon's peer-to-peer networking for decentralized runs, kept
// beside the coordinator stub (coordinator_client.h):
//   - PeerMailbox: the messages other workers pushed to this one, waiting
//     to be absorbed by the worker loop; open only while a decentralized
//     run is under way, for that run's id and peer token.
//   - PeerService: the gRPC Peer service a daemon serves (--peer-listen).
//     It checks the bearer token (constant time), the run id, the size, the
//     checksum and that every value is finite before a message reaches the
//     mailbox.
//   - PeerSender: pushes messages to peers (one channel per address, same
//     transport security as the coordinator connection: the daemon's CA and
//     client certificate), with a deadline on every call.
// Thread-safe: the mailbox and the sender are called from gRPC threads and
// the worker loop.
#ifndef FEDFWD_CLIENT_PEER_TRANSPORT_H_
#define FEDFWD_CLIENT_PEER_TRANSPORT_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/gossip.h"
#include "common/security.h"
#include "fedfwd.grpc.pb.h"

namespace fedfwd {

class PeerMailbox {
 public:
  // Messages held before Deliver answers RESOURCE_EXHAUSTED (the sender
  // then keeps the message's mass and may relay it later).
  static constexpr size_t kCapacity = 256;

  // Accepts messages of `num_values` values for run `run_id` carrying
  // `token`; drops anything left from an earlier run.
  void Open(const std::string& run_id, const std::string& token,
            int64_t num_values);
  // Refuses messages from now on (UNAVAILABLE) and drops the queue.
  void Close();
  // UNAVAILABLE when closed, UNAUTHENTICATED for a wrong token.
  absl::Status CheckToken(const std::string& token) const;
  // The number of values a message must have (-1 when closed).
  int64_t num_values() const;
  // Queues a message for the worker. FAILED_PRECONDITION for another run,
  // RESOURCE_EXHAUSTED when full.
  absl::Status Deliver(const std::string& run_id, PeerMessage message);
  // Removes and returns every queued message, oldest first.
  std::vector<PeerMessage> Drain();
  int64_t received() const;  // messages delivered since Open

 private:
  mutable std::mutex mu_;
  bool open_ = false;
  std::string run_id_, token_;
  int64_t num_values_ = -1;
  int64_t received_ = 0;
  std::deque<PeerMessage> queue_;
};

class PeerService final : public v1::Peer::Service {
 public:
  explicit PeerService(PeerMailbox* mailbox) : mailbox_(mailbox) {}
  grpc::Status Push(grpc::ServerContext* ctx,
                    grpc::ServerReader<v1::PeerChunk>* reader,
                    v1::PushReply* reply) override;

 private:
  PeerMailbox* mailbox_;  // not owned
};

class PeerSender {
 public:
  // `tls`: how to dial peers (their Peer services present certificates
  // from the same CA as the coordinator's, for their own addresses).
  explicit PeerSender(TlsOptions tls) : tls_(std::move(tls)) {}
  // Pushes `chunks` (one message) to the Peer service at `address` with
  // the run's `token`, waiting at most `deadline`. Returns the serialized
  // bytes sent in *bytes.
  absl::Status Push(const std::string& address, const std::string& token,
                    const std::vector<v1::PeerChunk>& chunks,
                    absl::Duration deadline, int64_t* bytes);

 private:
  absl::StatusOr<v1::Peer::Stub*> StubFor(const std::string& address);

  const TlsOptions tls_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<v1::Peer::Stub>> stubs_;
};

}  // namespace fedfwd

#endif  // FEDFWD_CLIENT_PEER_TRANSPORT_H_
