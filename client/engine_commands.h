// `bitsweep` subcommands that run the engine in-process: eval, run, inspect and train.
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
//               [--calibration_dataset REF] [--calibration_samples 1000]]
absl::Status EvalCommand();

// bitsweep run --model M.onnx --input NAME=FILE.pb [--input ...] --output-dir DIR
// `inputs` are the --input values, collected before absl parsing because the flag repeats.
absl::Status RunCommand(const std::vector<std::string>& inputs);

// bitsweep inspect --model M.onnx [--dataset REF [--limit N]] [--json]
// Lists the quantizable layers: class, shapes, MACs, parameters and, given data, their ranges.
absl::Status InspectCommand();

// bitsweep train --arch linear --dataset REF --out M.onnx [--mean ..] [--std ..] [--limit N]
// Fits a zoo baseline on a training split and writes it as ONNX.
absl::Status TrainCommand();

}  // namespace bitsweep::cli

#endif  // BITSWEEP_CLIENT_ENGINE_COMMANDS_H_
