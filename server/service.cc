#include "server/service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/codec.h"
#include "common/estimators.h"
#include "common/status_macros.h"
#include "common/step_rule.h"
#include "common/update_codec.h"

namespace fedfwd {
namespace {

// Longest a GetTask call may be held, whatever the client asks.
constexpr uint32_t kMaxWaitMs = 30000;

int64_t Size(const google::protobuf::Message& m) {
  return static_cast<int64_t>(m.ByteSizeLong());
}

}  // namespace

CoordinatorService::CoordinatorService(CoordinatorEngine* engine,
                                       CredentialStore* auth)
    : engine_(engine), auth_(auth) {
  // A resumed engine brings its clients back: bind them to their
  // credentials again.
  absl::MutexLock lock(&owners_mu_);
  for (const auto& [id, owner] : engine_->ClientOwners()) {
    if (!owner.empty()) owners_[id] = owner;
  }
}

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::StatusOr<std::string> CoordinatorService::Authorize(
    const grpc::ServerContext* ctx, Role role,
    std::optional<uint32_t> client_id) {
  if (auth_ == nullptr) return std::string();
  ASSIGN_OR_RETURN(Identity id, auth_->Authorize(*ctx, role));
  if (client_id.has_value()) {
    absl::MutexLock lock(&owners_mu_);
    auto it = owners_.find(*client_id);
    if (it != owners_.end() && it->second != id.name) {
      return absl::PermissionDeniedError(
          absl::StrCat("client ", *client_id,
                       " joined with another credential than '", id.name, "'"));
    }
  }
  return id.name;
}

grpc::Status CoordinatorService::Join(grpc::ServerContext* ctx,
                                      const v1::JoinRequest* req,
                                      v1::JoinReply* reply) {
  auto who = Authorize(ctx, Role::kClient, std::nullopt);
  if (!who.ok()) return ToGrpc(who.status());
  JoinParams p;
  p.protocol_version = req->protocol_version();
  p.name = req->client_name().substr(0, 256);
  p.shard = req->shard();
  p.num_shards = req->num_shards();
  p.owner = *who;
  p.peer_address = req->peer_address().substr(0, 512);
  p.join_key = req->join_key().substr(0, 64);
  auto out = engine_->Join(p);
  if (out.ok()) {
    if (auth_ != nullptr) {
      absl::MutexLock lock(&owners_mu_);
      owners_[out->client_id] = *who;
    }
    const Config& c = engine_->config();
    reply->set_protocol_version(kProtocolVersion);
    reply->set_client_id(out->client_id);
    reply->set_session(out->session);
    reply->set_shard(out->shard);
    reply->set_heartbeat_ms(
        static_cast<uint32_t>(std::max(100.0, c.timeouts.client_s * 1000 / 4)));
    v1::RunSpec* run = reply->mutable_run();
    // Clients that stay across runs tell a new run from a resumed one by it.
    run->set_run_id(engine_->run_id());
    run->set_seed(c.seed);
    run->set_model(c.model);
    if (engine_->spec().script != nullptr) {
      run->set_torchscript(*engine_->spec().script);
    }
    if (IsFileDataset(c.dataset.name)) {
      run->set_data_label(c.dataset.file.label);
      run->set_data_features(c.dataset.file.features);
      run->set_data_id(c.dataset.file.id);
      run->set_regression(c.dataset.file.regression);
      for (int64_t d : engine_->spec().input_shape) run->add_data_shape(d);
      run->set_num_classes(engine_->spec().num_classes);
      for (const std::string& name : c.dataset.class_names) {
        run->add_class_names(name);
      }
    }
    run->set_dataset(c.dataset.name);
    run->set_partition(c.partition.type);
    run->set_shards_per_client(c.partition.shards_per_client);
    run->set_partition_alpha(c.partition.alpha);
    run->set_num_shards(c.clients);
    run->set_batch_size(c.batch_size);
    run->set_estimator(c.estimator);
    run->set_train_limit(c.dataset.train_limit);
    run->set_rounds(c.rounds);
    // Forward-gradient runs replay the coordinator's optimizer step
    // (common/step_rule.h); the client needs its rule.
    const StepRule rule = StepRuleOf(c);
    // Only with seed replay (sync: auto): a client that always fetches
    // snapshots needs no state.
    if (IsForwardGradientEstimator(c.estimator) && rule.Stateful() &&
        c.sync == "auto") {
      *run->mutable_step_rule() = ToProto(rule);
    }
  }
  engine_->CountBytes(Size(*req), Size(*reply));
  return ToGrpc(out.status());
}

grpc::Status CoordinatorService::GetTask(grpc::ServerContext* ctx,
                                         const v1::TaskRequest* req,
                                         v1::Task* reply) {
  auto who = Authorize(ctx, Role::kClient, req->client_id());
  if (!who.ok()) return ToGrpc(who.status());
  // Hold the call no longer than the client's deadline allows (minus a
  // margin for the reply to travel back).
  absl::Duration wait =
      absl::Milliseconds(std::min(req->wait_ms(), kMaxWaitMs));
  const auto left = ctx->deadline() - std::chrono::system_clock::now();
  wait = std::min(wait, absl::FromChrono(left) - absl::Milliseconds(200));
  wait = std::max(wait, absl::ZeroDuration());
  auto out = engine_->NextTask(req->client_id(), req->session(), wait,
                               req->model_version());
  if (out.ok()) {
    switch (out->kind) {
      case TaskOutcome::kWait:
        reply->set_kind(v1::Task::WAIT);
        break;
      case TaskOutcome::kStop:
        reply->set_kind(v1::Task::STOP);
        reply->set_message(out->message);
        break;
      case TaskOutcome::kCompute:
        reply->set_kind(v1::Task::COMPUTE);
        reply->set_round(out->task.round);
        reply->set_model_version(out->model_version);
        reply->set_model_checksum(out->model_checksum);
        reply->set_batch_size(out->task.batch_size);
        reply->set_estimator(out->task.estimator);
        // One run of two or more keys goes as first + count; several runs
        // (a per-layer budget) as tangent_runs; keys that form no runs as
        // themselves.
        {
          const std::vector<TangentKey>& keys = out->task.tangents;
          const auto runs = KeyRuns(keys);
          if (keys.size() >= 2 && runs.size() == 1) {
            *reply->mutable_tangent_run_first() = ToProto(keys.front());
            reply->set_tangent_run_count(static_cast<uint32_t>(keys.size()));
          } else if (runs.size() > 1 && runs.size() < keys.size()) {
            for (const auto& [begin, end] : runs) {
              v1::TangentRun* run = reply->add_tangent_runs();
              *run->mutable_first() = ToProto(keys[begin]);
              run->set_count(static_cast<uint32_t>(end - begin));
            }
          } else {
            for (const auto& k : keys) *reply->add_tangents() = ToProto(k);
          }
        }
        reply->set_local_epochs(out->task.local_epochs);
        reply->set_lr(out->task.lr);
        reply->set_momentum(out->task.momentum);
        reply->set_weight_decay(out->task.weight_decay);
        reply->set_compression(out->task.compression);
        reply->set_dp_clip(out->task.dp_clip);
        if (out->task.jvp_bits == 8) {
          reply->set_jvp_bits(8);
          reply->set_jvp_clip(out->task.jvp_clip);
        }
        reply->set_dp_noise_multiplier(out->task.dp_noise_multiplier);
        reply->set_fd_epsilon(out->task.fd_epsilon);
        reply->set_fd_fixed_point(out->task.fd_fixed_point);
        for (const auto& entry : out->replay) {
          AppendSeedRuns(entry.step->terms, entry.version,
                         reply->mutable_update_runs());
        }
        if (out->has_step_state) {
          // Replay with optimizer state: the rule's step per version needs
          // its lr, and the state its checksum.
          for (const auto& entry : out->replay) {
            reply->add_replay_lr(entry.step->lr);
          }
          reply->set_step_state_checksum(out->step_state_checksum);
        }
        break;
      case TaskOutcome::kPeer:
        reply->set_kind(v1::Task::PEER);
        reply->set_model_version(out->model_version);
        reply->set_model_checksum(out->model_checksum);
        reply->set_batch_size(out->task.batch_size);
        reply->set_lr(out->task.lr);
        reply->set_momentum(out->task.momentum);
        *reply->mutable_peer() = out->peer;
        break;
    }
  }
  engine_->CountBytes(Size(*req), Size(*reply));
  return ToGrpc(out.status());
}

grpc::Status CoordinatorService::SubmitResult(grpc::ServerContext* ctx,
                                              const v1::TaskResult* req,
                                              v1::SubmitReply* reply) {
  auto who = Authorize(ctx, Role::kClient, req->client_id());
  if (!who.ok()) return ToGrpc(who.status());
  ClientResult r;
  r.client_id = req->client_id();
  r.round = req->round();
  r.jvps.assign(req->jvp().begin(), req->jvp().end());
  r.jvps.insert(r.jvps.end(), req->jvp32().begin(), req->jvp32().end());
  r.num_samples = req->num_samples();
  r.loss = req->loss();
  r.compute_ms = req->compute_ms();
  absl::Status s;
  if (!req->jvp8().empty()) {
    auto d = DecodeJvp8(req->jvp8(), req->jvp8_scale());
    if (d.ok()) {
      r.jvps.insert(r.jvps.end(), d->begin(), d->end());
    } else {
      s = d.status();
    }
  }
  const int forms =
      (req->jvp_size() > 0) + (req->jvp32_size() > 0) + !req->jvp8().empty();
  if (!s.ok()) {
    // jvp8 did not decode
  } else if (forms > 1) {
    s = absl::InvalidArgumentError(
        "a result carries JVP values in one form (jvp, jvp32 or jvp8)");
  } else if (r.jvps.size() > 65536) {
    s = absl::InvalidArgumentError(
        absl::StrCat("too many JVP values: ", r.jvps.size()));
  } else {
    s = engine_->Submit(req->session(), r, req->model_version());
  }
  reply->set_accepted(s.ok());
  engine_->CountBytes(Size(*req), Size(*reply));
  return ToGrpc(s);
}

grpc::Status CoordinatorService::SubmitUpdate(
    grpc::ServerContext* ctx, grpc::ServerReader<v1::UpdateChunk>* reader,
    v1::SubmitReply* reply) {
  // Refuse strangers before reading a byte of their stream.
  auto who = Authorize(ctx, Role::kClient, std::nullopt);
  if (!who.ok()) return ToGrpc(who.status());
  int64_t up = 0;
  v1::TaskResult header;
  auto r = ReadUpdate(ctx, reader, &up, &header);
  absl::Status s = r.status();
  if (r.ok()) s = engine_->Submit(header.session(), *r, header.model_version());
  reply->set_accepted(s.ok());
  engine_->CountBytes(up, Size(*reply));
  return ToGrpc(s);
}

grpc::Status CoordinatorService::ReportModel(
    grpc::ServerContext* ctx, grpc::ServerReader<v1::UpdateChunk>* reader,
    v1::PeerList* reply) {
  auto who = Authorize(ctx, Role::kClient, std::nullopt);
  if (!who.ok()) return ToGrpc(who.status());
  int64_t up = 0;
  v1::TaskResult header;
  auto r = ReadUpdate(ctx, reader, &up, &header);
  absl::Status s = r.status();
  if (r.ok()) {
    auto peers =
        engine_->ReportModel(header.session(), *r, header.peer_bytes());
    s = peers.status();
    if (peers.ok()) {
      for (v1::PeerInfo& p : *peers) *reply->add_peers() = std::move(p);
      reply->set_relayed(engine_->RelayedPending(header.client_id()));
    }
  }
  engine_->CountBytes(up, Size(*reply));
  return ToGrpc(s);
}

grpc::Status CoordinatorService::RelayPush(
    grpc::ServerContext* ctx, grpc::ServerReader<v1::PeerChunk>* reader,
    v1::PushReply* reply) {
  auto who = Authorize(ctx, Role::kClient, std::nullopt);
  if (!who.ok()) return ToGrpc(who.status());
  int64_t up = 0;
  absl::Status s = [&]() -> absl::Status {
    v1::PeerChunk chunk;
    if (!reader->Read(&chunk)) {
      return absl::InvalidArgumentError("empty relay stream");
    }
    up += Size(chunk);
    const uint32_t from = chunk.from();
    const std::string session = chunk.session();
    RETURN_IF_ERROR(Authorize(ctx, Role::kClient, from).status());
    RETURN_IF_ERROR(engine_->Heartbeat(from, session));
    PeerMessageAssembler assembler(engine_->spec().NumParams());
    while (true) {
      RETURN_IF_ERROR(assembler.Add(chunk));
      if (!reader->Read(&chunk)) break;
      up += Size(chunk);
    }
    ASSIGN_OR_RETURN(PeerMessage m, assembler.Finish());
    return engine_->Relay(from, session, assembler.header().to(), std::move(m));
  }();
  reply->set_accepted(s.ok());
  engine_->CountBytes(up, Size(*reply));
  return ToGrpc(s);
}

grpc::Status CoordinatorService::FetchRelayed(
    grpc::ServerContext* ctx, const v1::RelayRequest* req,
    grpc::ServerWriter<v1::PeerChunk>* writer) {
  auto who = Authorize(ctx, Role::kClient, req->client_id());
  if (!who.ok()) return ToGrpc(who.status());
  auto messages = engine_->TakeRelayed(req->client_id(), req->session());
  int64_t down = 0;
  grpc::Status status = ToGrpc(messages.status());
  if (messages.ok()) {
    for (const PeerMessage& m : *messages) {
      for (const v1::PeerChunk& c :
           PeerMessageChunks(m, engine_->run_id(), m.from, req->client_id())) {
        down += Size(c);
        if (!writer->Write(c)) {
          status = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                "stream broken; relayed messages lost");
          break;
        }
      }
      if (!status.ok()) break;
    }
  }
  engine_->CountBytes(Size(*req), down);
  return status;
}

absl::StatusOr<ClientResult> CoordinatorService::ReadUpdate(
    const grpc::ServerContext* ctx, grpc::ServerReader<v1::UpdateChunk>* reader,
    int64_t* up, v1::TaskResult* header_out) {
  v1::UpdateChunk chunk;
  if (!reader->Read(&chunk)) {
    return absl::InvalidArgumentError("empty update stream");
  }
  *up += Size(chunk);
  const v1::TaskResult header = chunk.result();
  const uint64_t checksum = chunk.checksum();
  const uint64_t announced = chunk.total_bytes();
  // Authenticate before buffering megabytes from the caller.
  RETURN_IF_ERROR(Authorize(ctx, Role::kClient, header.client_id()).status());
  RETURN_IF_ERROR(engine_->Heartbeat(header.client_id(), header.session()));
  ASSIGN_OR_RETURN(UpdateEncoding encoding,
                   ParseUpdateEncoding(chunk.encoding()));
  const std::vector<int64_t> sizes = engine_->spec().ParamSizes();
  const uint64_t expected =
      static_cast<uint64_t>(EncodedUpdateBytes(encoding, sizes));
  if (announced != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "update of ", announced, " bytes announced; a ",
        UpdateEncodingName(encoding), " update of this model has ", expected));
  }
  if (header.jvp_size() != 0 || header.jvp32_size() != 0) {
    return absl::InvalidArgumentError("an update carries no JVP values");
  }
  std::string bytes;
  bytes.reserve(expected);
  while (true) {
    if (chunk.offset() != bytes.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("update chunk at offset ", chunk.offset(),
                       ", expected offset ", bytes.size()));
    }
    if (bytes.size() + chunk.data().size() > expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "update data exceeds the announced ", expected, " bytes"));
    }
    bytes.append(chunk.data());
    if (!reader->Read(&chunk)) break;
    *up += Size(chunk);
  }
  if (bytes.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "update stream ended at ", bytes.size(), " of ", expected, " bytes"));
  }
  if (Checksum(bytes.data(), bytes.size()) != checksum) {
    return absl::DataLossError("update checksum mismatch");
  }
  ClientResult r;
  r.client_id = header.client_id();
  r.round = header.round();
  r.num_samples = header.num_samples();
  r.loss = header.loss();
  r.compute_ms = header.compute_ms();
  ASSIGN_OR_RETURN(r.update, DecodeUpdate(bytes, sizes, encoding));
  *header_out = header;
  return r;
}

grpc::Status CoordinatorService::FetchModel(
    grpc::ServerContext* ctx, const v1::FetchModelRequest* req,
    grpc::ServerWriter<v1::ModelChunk>* writer) {
  auto who = Authorize(ctx, Role::kClient, req->client_id());
  if (!who.ok()) return ToGrpc(who.status());
  int64_t down = 0;
  auto snap = req->step_state()
                  ? engine_->GetStepState(req->client_id(), req->session(),
                                          req->model_version())
                  : engine_->GetSnapshot(req->client_id(), req->session(),
                                         req->model_version());
  if (!snap.ok()) {
    engine_->CountBytes(Size(*req), 0);
    return ToGrpc(snap.status());
  }
  const std::string& bytes = (*snap)->bytes;
  grpc::Status status = grpc::Status::OK;
  size_t off = 0;
  do {
    if (ctx->IsCancelled()) {
      status = grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
      break;
    }
    const size_t len = std::min(kSnapshotChunkBytes, bytes.size() - off);
    v1::ModelChunk chunk;
    chunk.set_model_version((*snap)->version);
    chunk.set_total_bytes(bytes.size());
    chunk.set_offset(off);
    chunk.set_data(bytes.data() + off, len);
    chunk.set_checksum((*snap)->checksum);
    chunk.set_model(engine_->spec().name);
    down += Size(chunk);
    if (!writer->Write(chunk)) {
      status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream broken");
      break;
    }
    off += len;
  } while (off < bytes.size());
  engine_->CountBytes(Size(*req), down);
  return status;
}

grpc::Status CoordinatorService::Heartbeat(grpc::ServerContext* ctx,
                                           const v1::HeartbeatRequest* req,
                                           v1::HeartbeatReply* reply) {
  auto who = Authorize(ctx, Role::kClient, req->client_id());
  if (!who.ok()) return ToGrpc(who.status());
  absl::Status s = engine_->Heartbeat(req->client_id(), req->session());
  if (s.ok()) reply->set_relayed(engine_->RelayedPending(req->client_id()));
  engine_->CountBytes(Size(*req), Size(*reply));
  return ToGrpc(s);
}

grpc::Status CoordinatorService::Leave(grpc::ServerContext* ctx,
                                       const v1::LeaveRequest* req,
                                       v1::LeaveReply* reply) {
  auto who = Authorize(ctx, Role::kClient, req->client_id());
  if (!who.ok()) return ToGrpc(who.status());
  absl::Status s = engine_->Leave(req->client_id(), req->session(),
                                  req->reason().substr(0, 256));
  engine_->CountBytes(Size(*req), Size(*reply));
  return ToGrpc(s);
}

grpc::Status CoordinatorService::GetStatus(grpc::ServerContext* ctx,
                                           const v1::StatusRequest*,
                                           v1::StatusReply* reply) {
  auto who = Authorize(ctx, Role::kStatus, std::nullopt);
  if (!who.ok()) return ToGrpc(who.status());
  EngineStatus s = engine_->GetStatus();
  reply->set_run_id(s.run_id);
  reply->set_round(s.round);
  reply->set_rounds(s.rounds);
  reply->set_model_version(s.model_version);
  reply->set_last_test_acc(s.last_test_acc);
  reply->set_state(s.state);
  for (const auto& c : s.clients) {
    v1::ClientStatus* cs = reply->add_clients();
    cs->set_client_id(c.id);
    cs->set_name(c.name);
    cs->set_shard(c.shard);
    cs->set_alive(c.alive);
    cs->set_last_seen_s(c.last_seen_s);
  }
  reply->set_last_test_round(s.last_test_round);
  for (const auto& [round, acc] : s.accuracy_history) {
    v1::StatusReply::Accuracy* a = reply->add_accuracy_history();
    a->set_round(round);
    a->set_test_acc(acc);
  }
  reply->set_wall_s(s.wall_s);
  reply->set_eta_s(s.eta_s);
  reply->set_bytes_up(s.bytes_up);
  reply->set_bytes_down(s.bytes_down);
  reply->set_clients_expected(s.clients_expected);
  reply->set_min_clients(s.min_clients);
  reply->set_model(s.model);
  reply->set_dataset(s.dataset);
  reply->set_estimator(s.estimator);
  return grpc::Status::OK;
}

}  // namespace fedfwd
