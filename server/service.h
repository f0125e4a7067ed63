// The coordinator's gRPC service: validate -> convert -> delegate to the
// engine (RoundEngine or PeerEngine, see engine.h). It holds no training
// state and counts the serialized bytes of every message it receives and
// sends (metrics bytes_up / bytes_down).
// Thread-safe: gRPC calls it from many threads; the engine is thread-safe.
#ifndef FEDFWD_SERVER_SERVICE_H_
#define FEDFWD_SERVER_SERVICE_H_

#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/security.h"
#include "fedfwd.grpc.pb.h"
#include "server/engine.h"

namespace fedfwd {

class CoordinatorService final : public v1::Coordinator::Service {
 public:
  // With `auth`, every call must carry a token the store accepts: training
  // calls a `client` credential, GetStatus any. A client id stays bound to
  // the credential that joined it: another credential using it is refused
  // with PERMISSION_DENIED. Without `auth` anyone who reaches the port may
  // call.
  // Ids the engine already knows (a resumed run) stay bound to the
  // credentials that joined them.
  explicit CoordinatorService(CoordinatorEngine* engine,
                              CredentialStore* auth = nullptr);

  grpc::Status Join(grpc::ServerContext* ctx, const v1::JoinRequest* req,
                    v1::JoinReply* reply) override;
  grpc::Status GetTask(grpc::ServerContext* ctx, const v1::TaskRequest* req,
                       v1::Task* reply) override;
  grpc::Status SubmitResult(grpc::ServerContext* ctx, const v1::TaskResult* req,
                            v1::SubmitReply* reply) override;
  grpc::Status SubmitUpdate(grpc::ServerContext* ctx,
                            grpc::ServerReader<v1::UpdateChunk>* reader,
                            v1::SubmitReply* reply) override;
  grpc::Status FetchModel(grpc::ServerContext* ctx,
                          const v1::FetchModelRequest* req,
                          grpc::ServerWriter<v1::ModelChunk>* writer) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx,
                         const v1::HeartbeatRequest* req,
                         v1::HeartbeatReply* reply) override;
  grpc::Status Leave(grpc::ServerContext* ctx, const v1::LeaveRequest* req,
                     v1::LeaveReply* reply) override;
  grpc::Status GetStatus(grpc::ServerContext* ctx, const v1::StatusRequest* req,
                         v1::StatusReply* reply) override;
  grpc::Status ReportModel(grpc::ServerContext* ctx,
                           grpc::ServerReader<v1::UpdateChunk>* reader,
                           v1::PeerList* reply) override;
  grpc::Status RelayPush(grpc::ServerContext* ctx,
                         grpc::ServerReader<v1::PeerChunk>* reader,
                         v1::PushReply* reply) override;
  grpc::Status FetchRelayed(grpc::ServerContext* ctx,
                            const v1::RelayRequest* req,
                            grpc::ServerWriter<v1::PeerChunk>* writer) override;

 private:
  // Reads and checks one streamed update (authenticating its sender before
  // buffering it); counts its bytes in *up; *header gets its header.
  absl::StatusOr<ClientResult> ReadUpdate(
      const grpc::ServerContext* ctx,
      grpc::ServerReader<v1::UpdateChunk>* reader, int64_t* up,
      v1::TaskResult* header);

  // Authenticates the call (no-op without a credential store); with
  // `client_id`, also checks that the id belongs to the caller.
  absl::StatusOr<std::string> Authorize(const grpc::ServerContext* ctx,
                                        Role role,
                                        std::optional<uint32_t> client_id);

  CoordinatorEngine* engine_;  // not owned; outlives the service
  CredentialStore* auth_;      // not owned; may be null
  absl::Mutex owners_mu_;
  absl::flat_hash_map<uint32_t, std::string> owners_
      ABSL_GUARDED_BY(owners_mu_);
};

// absl::Status -> grpc::Status with the same code and message.
grpc::Status ToGrpc(const absl::Status& status);

}  // namespace fedfwd

#endif  // FEDFWD_SERVER_SERVICE_H_
