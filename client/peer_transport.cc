#include "client/peer_transport.h"

#include <grpcpp/grpcpp.h>
#include <openssl/crypto.h>

#include "absl/strings/str_cat.h"
#include "client/coordinator_client.h"
#include "common/codec.h"
#include "common/status_macros.h"

namespace fedfwd {

void PeerMailbox::Open(const std::string& run_id, const std::string& token,
                       int64_t num_values) {
  std::lock_guard<std::mutex> lock(mu_);
  open_ = true;
  run_id_ = run_id;
  token_ = token;
  num_values_ = num_values;
  received_ = 0;
  queue_.clear();
}

void PeerMailbox::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  open_ = false;
  token_.clear();
  num_values_ = -1;
  queue_.clear();
}

absl::Status PeerMailbox::CheckToken(const std::string& token) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!open_) {
    return absl::UnavailableError(
        "this worker is not in a decentralized run (yet)");
  }
  if (token.size() != token_.size() ||
      CRYPTO_memcmp(token.data(), token_.data(), token.size()) != 0) {
    return absl::UnauthenticatedError("bad peer token");
  }
  return absl::OkStatus();
}

int64_t PeerMailbox::num_values() const {
  std::lock_guard<std::mutex> lock(mu_);
  return open_ ? num_values_ : -1;
}

absl::Status PeerMailbox::Deliver(const std::string& run_id,
                                  PeerMessage message) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!open_) {
    return absl::UnavailableError("this worker's run is over");
  }
  if (run_id != run_id_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "message for run ", run_id, "; this worker is in run ", run_id_));
  }
  if (queue_.size() >= kCapacity) {
    return absl::ResourceExhaustedError(
        absl::StrCat("mailbox full (", kCapacity, " messages)"));
  }
  queue_.push_back(std::move(message));
  ++received_;
  return absl::OkStatus();
}

std::vector<PeerMessage> PeerMailbox::Drain() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<PeerMessage> out(std::make_move_iterator(queue_.begin()),
                               std::make_move_iterator(queue_.end()));
  queue_.clear();
  return out;
}

int64_t PeerMailbox::received() const {
  std::lock_guard<std::mutex> lock(mu_);
  return received_;
}

grpc::Status PeerService::Push(grpc::ServerContext* ctx,
                               grpc::ServerReader<v1::PeerChunk>* reader,
                               v1::PushReply* reply) {
  absl::Status s = [&]() -> absl::Status {
    // Authenticate before reading a byte of the stream.
    const auto& md = ctx->client_metadata();
    auto it = md.find(kAuthMetadataKey);
    if (it == md.end()) {
      return absl::UnauthenticatedError("missing peer token");
    }
    ASSIGN_OR_RETURN(
        absl::string_view token,
        BearerToken(absl::string_view(it->second.data(), it->second.size())));
    RETURN_IF_ERROR(mailbox_->CheckToken(std::string(token)));
    const int64_t expected = mailbox_->num_values();
    if (expected < 0) return absl::UnavailableError("no run");
    PeerMessageAssembler assembler(expected);
    v1::PeerChunk chunk;
    bool any = false;
    while (reader->Read(&chunk)) {
      any = true;
      RETURN_IF_ERROR(assembler.Add(chunk));
    }
    if (!any) return absl::InvalidArgumentError("empty peer message");
    ASSIGN_OR_RETURN(PeerMessage m, assembler.Finish());
    return mailbox_->Deliver(assembler.header().run_id(), std::move(m));
  }();
  reply->set_accepted(s.ok());
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

absl::StatusOr<v1::Peer::Stub*> PeerSender::StubFor(
    const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = stubs_.find(address);
  if (it != stubs_.end()) return it->second.get();
  TlsOptions tls = tls_;
  tls.server_name.clear();  // the coordinator's name override is not theirs
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                   MakeChannel(address, tls, args));
  auto stub = v1::Peer::NewStub(channel);
  v1::Peer::Stub* raw = stub.get();
  stubs_[address] = std::move(stub);
  return raw;
}

absl::Status PeerSender::Push(const std::string& address,
                              const std::string& token,
                              const std::vector<v1::PeerChunk>& chunks,
                              absl::Duration deadline, int64_t* bytes) {
  ASSIGN_OR_RETURN(v1::Peer::Stub * stub, StubFor(address));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   absl::ToChronoMilliseconds(deadline));
  AttachToken(&ctx, token);
  v1::PushReply reply;
  auto writer = stub->Push(&ctx, &reply);
  for (const v1::PeerChunk& c : chunks) {
    if (!writer->Write(c)) break;
    *bytes += static_cast<int64_t>(c.ByteSizeLong());
  }
  writer->WritesDone();
  return FromGrpc(writer->Finish());
}

}  // namespace fedfwd
