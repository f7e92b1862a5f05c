// `bitsweep` subcommands that talk to a coordinator over gRPC (--server ADDR): submit, watch,
// frontier, trials, export, cancel, sweeps; and `local`, which runs a coordinator and workers in
// this process and drives one sweep through the same client calls.
//
// Like engine_commands.h: flags are absl flags, each command returns a Status and main.cc prints
// it for people.
#ifndef BITSWEEP_CLIENT_SERVICE_COMMANDS_H_
#define BITSWEEP_CLIENT_SERVICE_COMMANDS_H_

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bitsweep/v1/explorer.pb.h"
#include "client/explorer_client.h"

namespace bitsweep::cli {

// bitsweep submit --server ADDR --model M.onnx|--model_hash H --dataset idx:DIR
//   [--strategy ristretto] [--error_margin 1.0] [--weight_formats fixed:16,fixed:8,...]
//   [--activation_formats ...] [--grid 'conv.weights=fixed:8,fixed:4;default.activations=...']
//   [--finetune_steps N] [--objectives top1,size] [--sweep_file S.json] [--wait]
absl::Status SubmitCommand();
// bitsweep watch --server ADDR --sweep ID: progress bar, stage, best so far, ETA.
absl::Status WatchCommand();
absl::Status ResumeCommand();
// bitsweep frontier --server ADDR --sweep ID [--objectives top1,energy] [--format table|csv|json]
//   [--plot frontier.svg] [--within_margin_only]
absl::Status FrontierCommand();
// bitsweep trials --server ADDR --sweep ID [--state succeeded] [--stage S] [--format ...]
absl::Status TrialsCommand();
// bitsweep export --server ADDR --trial ID [--out manifest.json] [--qdq model.onnx]
absl::Status ExportCommand();
// `bitsweep trials invalidate --trial ID`: takes the trial's result back from deduplication.
absl::Status TrialsInvalidateCommand();
// bitsweep cancel --server ADDR --sweep ID
absl::Status CancelCommand();
// bitsweep sweeps --server ADDR
absl::Status SweepsCommand();
// bitsweep local --model M.onnx|zoo:lenet5 --dataset idx:DIR [--strategy ristretto]
//   [--error_margin 1.0] [--workers 2] [--db results.db] [sweep flags as for submit]
absl::Status LocalCommand();

// Shared by submit and local: the sweep spec the flags (and --sweep_file) describe, without the
// model hash.
absl::StatusOr<v1::SweepSpec> SweepSpecFromFlags();
// Follows a sweep until it is final, drawing progress on `out` (nullptr: silent): one line redrawn
// in place and cut to the width when `out` is a terminal, else a plain line per change. Returns
// the final sweep.
absl::StatusOr<v1::Sweep> FollowSweepOn(ExplorerClient& client, int64_t sweep_id, FILE* out);
// The same, drawing on stderr when `progress`.
absl::StatusOr<v1::Sweep> FollowSweep(ExplorerClient& client, int64_t sweep_id, bool progress);
// OK for a succeeded (or still running) sweep; an error naming the sweep when it failed or was
// cancelled, so that `watch`, `submit --wait` and `local` exit 1 for both.
absl::Status SweepOutcome(const v1::Sweep& sweep);
// "queued", "running", "succeeded", "failed", "cancelled".
std::string StateName(v1::SweepState state);
// Every trial of the request's sweep, all pages.
absl::StatusOr<std::vector<v1::Trial>> ListAllTrials(ExplorerClient& client,
                                                     v1::ListTrialsRequest request);
// A client for --server / --token / --tls-ca.
absl::StatusOr<std::unique_ptr<ExplorerClient>> ConnectFromFlags();
// Prints a frontier in the --format the flags ask for (table by default).
absl::Status PrintFrontier(const v1::Frontier& frontier);

}  // namespace bitsweep::cli

#endif  // BITSWEEP_CLIENT_SERVICE_COMMANDS_H_
