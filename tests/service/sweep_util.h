// Sweep helpers shared by the end-to-end tests (tests/service on loopback, tests/ops with
// Prometheus and in Docker): the LeNet-5 sweep spec they submit, and a poll until a sweep is final.
//
//   v1::SweepSpec spec = LenetSweepSpec("integration", "ristretto", hash, "idx:/data/fmnist", 1000);
//   v1::Sweep done = WaitUntilFinal(*client, id, std::chrono::seconds(300),
//                                   [&](const v1::Sweep& s) { /* each poll, e.g. kill a worker */ });
#ifndef BITSWEEP_TESTS_SERVICE_SWEEP_UTIL_H_
#define BITSWEEP_TESTS_SERVICE_SWEEP_UTIL_H_

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "client/explorer_client.h"
#include "gtest/gtest.h"

namespace bitsweep::testing {

// The committed LeNet-5 (uploaded as `model_hash`) on Fashion-MNIST at `data` (idx:DIR, as the
// workers see it): margin 1 point, 200 calibration samples, the first `eval_limit` test images.
inline v1::SweepSpec LenetSweepSpec(const std::string& name, const std::string& strategy,
                                    const std::string& model_hash, const std::string& data,
                                    int64_t eval_limit) {
  v1::SweepSpec spec;
  spec.set_name(name);
  spec.set_model_hash(model_hash);
  spec.set_strategy(strategy);
  spec.set_error_margin(1.0);
  v1::DatasetRef* dataset = spec.mutable_settings()->mutable_dataset();
  dataset->set_train(data + "/train");
  dataset->set_eval(data + "/t10k");
  dataset->add_mean(0.2860f);
  dataset->add_std(0.3530f);
  dataset->set_eval_limit(eval_limit);
  dataset->set_calibration_samples(200);
  return spec;
}

// Polls GetSweep until the sweep is final or `timeout` passes; `on_poll` sees every answer.
inline v1::Sweep WaitUntilFinal(cli::ExplorerClient& client, int64_t sweep_id,
                                std::chrono::seconds timeout,
                                const std::function<void(const v1::Sweep&)>& on_poll = {}) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  v1::Sweep sweep;
  while (std::chrono::steady_clock::now() < end) {
    absl::StatusOr<v1::Sweep> s = client.GetSweep(sweep_id);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) break;
    sweep = *s;
    if (sweep.state() == v1::SWEEP_SUCCEEDED || sweep.state() == v1::SWEEP_FAILED ||
        sweep.state() == v1::SWEEP_CANCELLED) {
      break;
    }
    if (on_poll) on_poll(sweep);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return sweep;
}

}  // namespace bitsweep::testing

#endif  // BITSWEEP_TESTS_SERVICE_SWEEP_UTIL_H_
