// The worker side of a decentralized run (Task kind PEER): `steps` local
// minibatch SGD steps on the daemon's shard, mixed with the other workers as
// the task's algorithm says:
//   easgd: every tau steps, read the center from the coordinator
//          (FetchModel; synchronous: the center of this exchange), move by
//          the elastic difference alpha (x - center) computed from the
//          parameters before the exchange, and send it (SubmitUpdate);
//   gosgd: absorb queued messages (ProcessMessages), step, and with
//          probability p push (x, alpha / 2) to a random live peer;
//   sgp:   absorb queued push-sum shares, step on the de-biased z = x / w
//          (x -= lr * w * g(z), so that z moves by lr * g whatever the
//          weight), and send the out-shares of the task's graph.
//          Asynchronous: a worker never waits for its in-neighbours; what
//          arrives late is absorbed at the next step (push-sum conserves
//          mass either way).
// Every report_every steps (and at the end) it reports its parameters (sgp:
// z) to the coordinator and learns which peers still train.
//
// A push a peer does not take goes through the coordinator's relay; when
// the coordinator says the peer is gone (or its queue is full), the sender
// absorbs the message back, so no mass is lost among the live workers.
//
// Not thread-safe: the daemon's work loop runs it; the mailbox is filled by
// the peer service's threads.
#ifndef FEDFWD_CLIENT_PEER_WORKER_H_
#define FEDFWD_CLIENT_PEER_WORKER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "client/coordinator_client.h"
#include "client/peer_transport.h"
#include "common/log.h"
#include "common/trainer.h"
#include "fedfwd.pb.h"

namespace fedfwd {

struct PeerWorkerEnv {
  CoordinatorClient* coordinator = nullptr;
  PeerSender* sender = nullptr;
  PeerMailbox* mailbox = nullptr;  // opened by RunPeerWorker, closed at end
  Trainer* trainer = nullptr;
  uint32_t client_id = 0;
  std::string session;
  std::string run_id;
  uint64_t seed = 0;
  const std::atomic<bool>* stop = nullptr;
  // Relayed messages waiting on the coordinator (set by the heartbeat
  // thread and by report replies, cleared here when fetched).
  std::atomic<int>* relayed_pending = nullptr;
  std::function<void(const std::string&, LogFields, LogLevel)> log;
};

// Runs the task to its last step and final report. OK at the end;
// Cancelled when env.stop is set; another error when the worker cannot go
// on (its training diverged, the coordinator refused it).
absl::Status RunPeerWorker(const v1::Task& task, const PeerWorkerEnv& env);

}  // namespace fedfwd

#endif  // FEDFWD_CLIENT_PEER_WORKER_H_
