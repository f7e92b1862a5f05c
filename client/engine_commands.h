// `bitsweep` subcommands that run the engine in-process: eval, run, inspect, train and finetune.
//
// Each takes the arguments left after flag parsing and returns a Status; main.cc prints errors
// for people and chooses the exit code. Flags are absl flags defined in engine_commands.cc.
#ifndef BITSWEEP_CLIENT_ENGINE_COMMANDS_H_
#define BITSWEEP_CLIENT_ENGINE_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace bitsweep::cli {

// bitsweep eval --model M.onnx --dataset REF [--mean ..] [--std ..] [--limit N] [--batch 256]
//               [--threads 2] [--json] [--config C.json [--hardware_profile P.json]
//               [--calibration_data REF] [--calibration_samples 1000]]
// Dataset flags (every command): client/dataset_flags.h.
absl::Status EvalCommand();

// bitsweep run --model M.onnx --input NAME=FILE.pb [--input ...] --output-dir DIR
// `inputs` are the --input values, collected before absl parsing because the flag repeats.
absl::Status RunCommand(const std::vector<std::string>& inputs);

// bitsweep inspect --model M.onnx [--dataset REF [--limit N]] [--json]
// Lists the quantizable layers: class, shapes, MACs, parameters and, given data, their ranges.
absl::Status InspectCommand();

// bitsweep train --arch lenet5|squeezenet-mini|resnet-mini|alexnet-mini|linear --dataset REF
//                --out M.onnx [--epochs 10] [--lr 0.01] [--train_batch 64] [...]
// Trains a zoo baseline from scratch on the training split (linear: closed-form ridge), writes it
// as ONNX and scores the written file on the evaluation split when there is one.
absl::Status TrainCommand();

// bitsweep finetune --model M.onnx --config C.json --dataset idx:DIR --steps N [--out F.onnx]
// Quantized fine-tuning (fp32 shadow weights, straight-through estimator); reports the quantized
// accuracy before and after and can write the fine-tuned shadow model.
absl::Status FinetuneCommand();

}  // namespace bitsweep::cli

#endif  // BITSWEEP_CLIENT_ENGINE_COMMANDS_H_
