// Engine configurations beyond what cuDNN's heuristics propose: the same engine with its knobs (tile shapes,
// split-K, cluster shape, swizzling, ...) moved off the heuristic's setting, for the convolution autotuner to time.
#pragma once
#include <vector>

#include "ops/cuda/cudnn_descriptor.h"

namespace dcae::ops::cuda::cudnn_conv_detail {

// A finalized engine configuration and the engine and knob-choice descriptors it was made of (kept alive with it,
// as cudnn-frontend does, since the configuration refers to them).
struct KnobVariant {
  Descriptor config;
  std::vector<Descriptor> parts;
};

// Finalized engine configurations of `config`'s engine for the finalized operation graph `graph`, each with one
// knob at another legal value (up to kValuesPerKnob of them per knob) and the others as `config` sets them; at
// most `max_variants`, those cuDNN refuses left out.
std::vector<KnobVariant> knob_variants(const Descriptor& graph, const Descriptor& config, int max_variants);

}  // namespace dcae::ops::cuda::cudnn_conv_detail
