#include "client/coordinator_client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <optional>

#include "common/codec.h"
#include "common/status_macros.h"

namespace fedfwd {
namespace {

constexpr absl::Duration kUnaryDeadline = absl::Seconds(10);
constexpr absl::Duration kFetchDeadline = absl::Seconds(120);

void SetDeadline(grpc::ClientContext* ctx, absl::Duration d) {
  ctx->set_deadline(std::chrono::system_clock::now() +
                    absl::ToChronoMilliseconds(d));
}

// Writes `bytes` as UpdateChunks (the header, with `result`, in the first)
// to a client stream; stops early when the server already answered.
template <typename Writer>
void WriteUpdateChunks(Writer* writer, const v1::TaskResult& result,
                       const std::string& encoding, const char* bytes,
                       size_t size) {
  size_t off = 0;
  do {
    v1::UpdateChunk chunk;
    if (off == 0) {
      *chunk.mutable_result() = result;
      chunk.set_encoding(encoding);
      chunk.set_total_bytes(size);
      chunk.set_checksum(Checksum(bytes, size));
    }
    const size_t len = std::min(kSnapshotChunkBytes, size - off);
    chunk.set_offset(off);
    chunk.set_data(bytes + off, len);
    // A refused write means the server already answered: Finish says why.
    if (!writer->Write(chunk)) break;
    off += len;
  } while (off < size);
  writer->WritesDone();
}

}  // namespace

bool IsRetryable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) ||
         absl::IsResourceExhausted(s) || absl::IsAborted(s) ||
         absl::IsCancelled(s);
}

bool IsRunOver(const absl::Status& s) {
  return absl::IsFailedPrecondition(s) &&
         s.message().find("run is over") != absl::string_view::npos;
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

absl::StatusOr<std::unique_ptr<CoordinatorClient>> CoordinatorClient::Connect(
    const std::string& address, const TlsOptions& tls,
    const std::string& token) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  // Reconnect quickly after the coordinator restarts.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  // Its own connection: gRPC would otherwise share one TCP connection among
  // all channels of a process with equal arguments, and the logical clients
  // of fedfwd-loadgen would not load the coordinator as separate hosts do.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                   MakeChannel(address, tls, args));
  return std::make_unique<CoordinatorClient>(std::move(channel), token);
}

CoordinatorClient::CoordinatorClient(std::shared_ptr<grpc::Channel> channel,
                                     std::string token)
    : channel_(std::move(channel)),
      token_(std::move(token)),
      stub_(v1::Coordinator::NewStub(channel_)) {}

void CoordinatorClient::Prepare(grpc::ClientContext* ctx,
                                absl::Duration d) const {
  SetDeadline(ctx, d);
  AttachToken(ctx, token_);
}

absl::StatusOr<v1::JoinReply> CoordinatorClient::Join(
    const v1::JoinRequest& req) {
  grpc::ClientContext ctx;
  Prepare(&ctx, kUnaryDeadline);
  v1::JoinReply reply;
  RETURN_IF_ERROR(FromGrpc(stub_->Join(&ctx, req, &reply)));
  return reply;
}

absl::StatusOr<v1::Task> CoordinatorClient::GetTask(uint32_t client_id,
                                                    const std::string& session,
                                                    absl::Duration wait,
                                                    uint64_t have_version) {
  grpc::ClientContext ctx;
  Prepare(&ctx, wait + absl::Seconds(5));
  v1::TaskRequest req;
  req.set_client_id(client_id);
  req.set_session(session);
  req.set_wait_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(wait)));
  req.set_model_version(have_version);
  v1::Task task;
  RETURN_IF_ERROR(FromGrpc(stub_->GetTask(&ctx, req, &task)));
  return task;
}

absl::Status CoordinatorClient::Submit(const v1::TaskResult& result) {
  grpc::ClientContext ctx;
  Prepare(&ctx, kUnaryDeadline);
  v1::SubmitReply reply;
  return FromGrpc(stub_->SubmitResult(&ctx, result, &reply));
}

absl::Status CoordinatorClient::SubmitUpdate(const v1::TaskResult& result,
                                             const std::string& encoding,
                                             const std::string& bytes) {
  grpc::ClientContext ctx;
  Prepare(&ctx, kFetchDeadline);
  v1::SubmitReply reply;
  auto writer = stub_->SubmitUpdate(&ctx, &reply);
  WriteUpdateChunks(writer.get(), result, encoding, bytes.data(), bytes.size());
  return FromGrpc(writer->Finish());
}

absl::StatusOr<v1::PeerList> CoordinatorClient::ReportModel(
    const v1::TaskResult& result, const std::vector<float>& params) {
  grpc::ClientContext ctx;
  Prepare(&ctx, kFetchDeadline);
  v1::PeerList reply;
  auto writer = stub_->ReportModel(&ctx, &reply);
  WriteUpdateChunks(writer.get(), result, "none",
                    reinterpret_cast<const char*>(params.data()),
                    params.size() * sizeof(float));
  RETURN_IF_ERROR(FromGrpc(writer->Finish()));
  return reply;
}

absl::Status CoordinatorClient::RelayPush(
    const std::vector<v1::PeerChunk>& chunks) {
  grpc::ClientContext ctx;
  Prepare(&ctx, kFetchDeadline);
  v1::PushReply reply;
  auto writer = stub_->RelayPush(&ctx, &reply);
  for (const v1::PeerChunk& c : chunks) {
    if (!writer->Write(c)) break;
  }
  writer->WritesDone();
  return FromGrpc(writer->Finish());
}

absl::StatusOr<std::vector<PeerMessage>> CoordinatorClient::FetchRelayed(
    uint32_t client_id, const std::string& session, int64_t expected_values) {
  grpc::ClientContext ctx;
  Prepare(&ctx, kFetchDeadline);
  v1::RelayRequest req;
  req.set_client_id(client_id);
  req.set_session(session);
  auto reader = stub_->FetchRelayed(&ctx, req);
  std::vector<PeerMessage> out;
  std::optional<PeerMessageAssembler> assembler;
  absl::Status chunk_status;
  v1::PeerChunk chunk;
  while (reader->Read(&chunk)) {
    if (!chunk_status.ok()) continue;
    // A chunk at offset 0 starts the next message.
    if (chunk.offset() == 0 && assembler.has_value()) {
      auto m = assembler->Finish();
      if (!m.ok()) {
        chunk_status = m.status();
        continue;
      }
      out.push_back(std::move(*m));
      assembler.reset();
    }
    if (!assembler.has_value()) assembler.emplace(expected_values);
    chunk_status = assembler->Add(chunk);
  }
  RETURN_IF_ERROR(FromGrpc(reader->Finish()));
  RETURN_IF_ERROR(chunk_status);
  if (assembler.has_value()) {
    ASSIGN_OR_RETURN(PeerMessage m, assembler->Finish());
    out.push_back(std::move(m));
  }
  return out;
}

absl::Status CoordinatorClient::FetchModel(
    uint32_t client_id, const std::string& session, uint64_t version,
    int64_t expected_params, std::vector<float>* out, uint64_t* checksum,
    bool step_state) {
  grpc::ClientContext ctx;
  Prepare(&ctx, kFetchDeadline);
  v1::FetchModelRequest req;
  req.set_client_id(client_id);
  req.set_session(session);
  req.set_model_version(version);
  req.set_step_state(step_state);
  auto reader = stub_->FetchModel(&ctx, req);
  SnapshotAssembler assembler(expected_params, version);
  v1::ModelChunk chunk;
  absl::Status chunk_status;
  while (reader->Read(&chunk)) {
    if (chunk_status.ok()) chunk_status = assembler.Add(chunk);
    *checksum = chunk.checksum();
  }
  RETURN_IF_ERROR(FromGrpc(reader->Finish()));
  RETURN_IF_ERROR(chunk_status);
  return assembler.Finish(out);
}

absl::Status CoordinatorClient::Heartbeat(uint32_t client_id,
                                          const std::string& session,
                                          int* relayed) {
  grpc::ClientContext ctx;
  Prepare(&ctx, kUnaryDeadline);
  v1::HeartbeatRequest req;
  req.set_client_id(client_id);
  req.set_session(session);
  v1::HeartbeatReply reply;
  RETURN_IF_ERROR(FromGrpc(stub_->Heartbeat(&ctx, req, &reply)));
  if (relayed != nullptr) *relayed = reply.relayed();
  return absl::OkStatus();
}

absl::Status CoordinatorClient::Leave(uint32_t client_id,
                                      const std::string& session,
                                      const std::string& reason) {
  grpc::ClientContext ctx;
  Prepare(&ctx, absl::Seconds(3));
  v1::LeaveRequest req;
  req.set_client_id(client_id);
  req.set_session(session);
  req.set_reason(reason);
  v1::LeaveReply reply;
  return FromGrpc(stub_->Leave(&ctx, req, &reply));
}

absl::StatusOr<v1::StatusReply> CoordinatorClient::GetStatus(
    absl::Duration deadline) {
  grpc::ClientContext ctx;
  Prepare(&ctx, deadline);
  v1::StatusRequest req;
  v1::StatusReply reply;
  RETURN_IF_ERROR(FromGrpc(stub_->GetStatus(&ctx, req, &reply)));
  return reply;
}

}  // namespace fedfwd
