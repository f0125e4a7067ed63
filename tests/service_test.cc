// The coordinator's gRPC service in-process, driven through the generated
// stub: streamed updates (FedAvg deltas) that are malformed in every way a
// client could get wrong are refused with a precise code, and a good one is
// merged.
#include "server/service.h"

#include <grpcpp/grpcpp.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/coordinator_client.h"
#include "common/codec.h"
#include "common/dataset.h"
#include "common/model_file.h"
#include "common/update_codec.h"
#include "gtest/gtest.h"
#include "server/evaluator.h"
#include "server/round_engine.h"
#include "server/strategy.h"
#include "tests/testutil/synthetic_data.h"

namespace fedfwd {
namespace {

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("fedfwd_service_test_");
    ASSERT_FALSE(
        testing::WriteSyntheticMnist(dir_ + "/data", 300, 100, 1).empty());
    config_.model = "tiny";
    config_.dataset.data_dir = dir_ + "/data";
    config_.clients = 1;
    config_.rounds = 1;
    config_.eval_every = 1;
    config_.estimator = "fedavg";
    config_.lr = 0.1;
    config_.timeouts.round_s = 20;
    config_.timeouts.join_s = 20;
    auto spec = GetModelSpec("tiny", {1, 28, 28});
    ASSERT_TRUE(spec.ok());
    spec_ = *spec;
    auto strategy = MakeStrategy(config_, spec_);
    ASSERT_TRUE(strategy.ok());
    auto evaluator = Evaluator::Create(config_, spec_);
    ASSERT_TRUE(evaluator.ok()) << evaluator.status();
    auto metrics = MetricsWriter::Open(dir_ + "/out");
    ASSERT_TRUE(metrics.ok());
    engine_ = std::make_unique<RoundEngine>(
        config_, spec_, std::move(*strategy), std::move(*evaluator),
        std::move(*metrics), 1);
    service_ = std::make_unique<CoordinatorService>(engine_.get());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(port, 0);
    TlsOptions plaintext;
    plaintext.insecure = true;
    auto client =
        CoordinatorClient::Connect(absl::StrCat("127.0.0.1:", port), plaintext,
                                   /*token=*/"");
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
    v1::JoinRequest join;
    join.set_protocol_version(kProtocolVersion);
    join.set_shard(-1);
    auto reply = client_->Join(join);
    ASSERT_TRUE(reply.ok()) << reply.status();
    id_ = reply->client_id();
    session_ = reply->session();
  }
  void TearDown() override {
    engine_->RequestStop();
    if (run_.joinable()) run_.join();
    server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }

  v1::TaskResult Header(int64_t round = 1, uint64_t version = 1) {
    v1::TaskResult r;
    r.set_client_id(id_);
    r.set_session(session_);
    r.set_round(round);
    r.set_model_version(version);
    r.set_num_samples(300);
    r.set_loss(1.0);
    return r;
  }
  std::string Encoded(const std::vector<float>& u, UpdateEncoding e) {
    auto bytes = EncodeUpdate(u.data(), spec_.ParamSizes(), e);
    EXPECT_TRUE(bytes.ok());
    return *bytes;
  }
  // Sends raw chunks on one SubmitUpdate stream.
  absl::Status SendRaw(const std::vector<v1::UpdateChunk>& chunks) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(10));
    v1::SubmitReply reply;
    auto channel = server_->InProcessChannel(grpc::ChannelArguments());
    auto in_process = v1::Coordinator::NewStub(channel);
    auto writer = in_process->SubmitUpdate(&ctx, &reply);
    for (const auto& c : chunks) {
      if (!writer->Write(c)) break;
    }
    writer->WritesDone();
    return FromGrpc(writer->Finish());
  }

  std::string dir_;
  Config config_;
  ModelSpec spec_;
  std::unique_ptr<RoundEngine> engine_;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<CoordinatorClient> client_;
  std::thread run_;
  uint32_t id_ = 0;
  std::string session_;
};

TEST_F(ServiceTest, MalformedUpdateStreamsAreRefusedPrecisely) {
  const size_t n = static_cast<size_t>(spec_.NumParams());
  const std::string good =
      Encoded(std::vector<float>(n, 0.01f), UpdateEncoding::kFloat32);
  // Unknown encoding.
  EXPECT_TRUE(
      absl::IsInvalidArgument(client_->SubmitUpdate(Header(), "zip", good)));
  // Size of another encoding.
  EXPECT_TRUE(
      absl::IsInvalidArgument(client_->SubmitUpdate(Header(), "fp16", good)));
  // Wrong session.
  v1::TaskResult bad = Header();
  bad.set_session("nope");
  EXPECT_TRUE(
      absl::IsUnauthenticated(client_->SubmitUpdate(bad, "none", good)));
  // Announced size right, stream short.
  v1::UpdateChunk first;
  *first.mutable_result() = Header();
  first.set_encoding("none");
  first.set_total_bytes(good.size());
  first.set_checksum(Checksum(good.data(), good.size()));
  first.set_data(good.substr(0, 100));
  EXPECT_TRUE(absl::IsInvalidArgument(SendRaw({first})));
  // A gap between chunks.
  v1::UpdateChunk second;
  second.set_offset(200);
  second.set_data(good.substr(200));
  EXPECT_TRUE(absl::IsInvalidArgument(SendRaw({first, second})));
  // Checksum mismatch.
  v1::UpdateChunk whole = first;
  whole.set_data(good);
  whole.set_checksum(whole.checksum() + 1);
  EXPECT_TRUE(absl::IsDataLoss(SendRaw({whole})));
  // NaN inside a well-formed stream.
  std::vector<float> nan(n, 0.0f);
  nan[3] = std::nanf("");
  std::string nan_bytes(reinterpret_cast<const char*>(nan.data()),
                        n * sizeof(float));
  EXPECT_TRUE(absl::IsInvalidArgument(
      client_->SubmitUpdate(Header(), "none", nan_bytes)));
  // JVP values on an update.
  v1::TaskResult with_jvp = Header();
  with_jvp.add_jvp(0.5);
  EXPECT_TRUE(
      absl::IsInvalidArgument(client_->SubmitUpdate(with_jvp, "none", good)));
  v1::TaskResult with_jvp32 = Header();
  with_jvp32.add_jvp32(0.5f);
  EXPECT_TRUE(
      absl::IsInvalidArgument(client_->SubmitUpdate(with_jvp32, "none", good)));
  // Well-formed, but no round is open yet.
  EXPECT_TRUE(absl::IsFailedPrecondition(
      client_->SubmitUpdate(Header(), "none", good)));
}

TEST_F(ServiceTest, GoodInt8UpdateIsMergedIntoTheModel) {
  run_ = std::thread([this] { engine_->Run().IgnoreError(); });
  absl::StatusOr<v1::Task> task;
  for (int i = 0; i < 50; ++i) {
    task = client_->GetTask(id_, session_, absl::Milliseconds(500));
    ASSERT_TRUE(task.ok()) << task.status();
    if (task->kind() == v1::Task::COMPUTE) break;
  }
  ASSERT_EQ(task->kind(), v1::Task::COMPUTE);
  EXPECT_EQ(task->estimator(), "fedavg");
  EXPECT_EQ(task->local_epochs(), 1);
  EXPECT_DOUBLE_EQ(task->lr(), 0.1);
  const size_t n = static_cast<size_t>(spec_.NumParams());
  const std::vector<float> delta(n, 0.25f);
  ASSERT_TRUE(client_
                  ->SubmitUpdate(Header(task->round(), task->model_version()),
                                 "int8", Encoded(delta, UpdateEncoding::kInt8))
                  .ok());
  // A second copy is refused (a duplicate, or the round already closed):
  // the final model below holds the delta once.
  absl::Status again =
      client_->SubmitUpdate(Header(task->round(), task->model_version()),
                            "int8", Encoded(delta, UpdateEncoding::kInt8));
  EXPECT_TRUE(absl::IsAlreadyExists(again) || absl::IsFailedPrecondition(again))
      << again;
  client_->Leave(id_, session_, "test done").IgnoreError();
  run_.join();
  auto final_model = ReadModelFile(dir_ + "/out/final_model.bin");
  ASSERT_TRUE(final_model.ok()) << final_model.status();
  const std::vector<float> start = InitialParams(spec_, config_.seed);
  ASSERT_EQ(final_model->params.size(), n);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_NEAR(final_model->params[i], start[i] + 0.25f, 1e-6) << i;
  }
}

}  // namespace
}  // namespace fedfwd
