// Vision towers and projectors on the CPU: the pre-norm ViT shared by SigLIP and CLIP
// (edgevlm/models/vit.py, siglip/vision.py, clip/vision.py) and the projectors that turn its
// hidden states into decoder embeddings: SmolVLM's pixel shuffle + linear (smolvlm/projector.py),
// LLaVA's 2-layer MLP (llava/projector.py) and MobileVLM's LDP / LDPv2 (mobilevlm/projector.py).
#pragma once

#include <string>
#include <vector>

#include "engines/cpu/config.h"
#include "engines/cpu/linear.h"
#include "engines/cpu/ops.h"

namespace edgevlm::cpu {

struct VitLayer {
  Floats ln1_w, ln1_b, ln2_w, ln2_b;  // [D]
  Linear q, k, v, out;                // [D, D] with bias
  Linear fc1, fc2;                    // [F, D], [D, F] with bias
};

/// A SigLIP (patch bias, learned positions, post-layernorm) or CLIP (class token, no patch bias,
/// pre-layernorm) tower, run up to its feature layer.
class VitEncoder {
 public:
  /// prefix: "vision_model." / "vision_tower."; clip selects the CLIP embeddings and norms.
  void load(const WeightSource& ws, const VisionConfig& cfg, const std::string& prefix, bool clip);
  const VisionConfig& config() const { return cfg_; }
  int tokens() const { return cfg_.patches_per_side() * cfg_.patches_per_side() + (clip_ ? 1 : 0); }
  /// One tile [3, S, S] -> hidden states out [tokens(), D].
  void forward(Compute& c, const float* tile, float* out);

 private:
  VisionConfig cfg_;
  bool clip_ = false;
  bool post_norm_ = false;
  Act act_ = Act::gelu_tanh;
  Floats patch_w_;  // [D, 3*p*p] (the convolution as a matrix)
  Floats patch_b_;  // [D] or empty
  Floats class_emb_;  // [D] (CLIP)
  Floats pos_emb_;    // [tokens, D]
  Floats pre_w_, pre_b_, post_w_, post_b_;  // [D]
  std::vector<VitLayer> layers_;
  // scratch
  std::vector<float> patches_, x_, h_, q_, k_, v_, att_, f_, scores_, vt_;
};

/// One MobileNetV3 inverted-residual block of MobileVLM's LDP, on a channels-last grid
/// [side, side, C]: depthwise 3x3 conv (stride 1 or 2, padding 1) + channel LayerNorm + Hardswish,
/// squeeze-excitation (mean, 1x1 conv, ReLU, 1x1 conv, Hardsigmoid), pointwise 1x1 conv + channel
/// LayerNorm; residual when the stride is 1.
struct LdpBlock {
  int stride = 1, squeeze = 0;
  Floats dw;                      // [C, 9]
  Floats ln1_w, ln1_b;            // [C]
  Floats se1_w, se1_b;            // [squeeze, C], [squeeze]
  Floats se2_w, se2_b;            // [C, squeeze], [C]
  Linear pw;                      // [C, C], float, no bias
  Floats ln2_w, ln2_b;            // [C]
};

/// Image features of one tile: encoder then projector -> [tokens_per_tile, text hidden].
class VisionPipeline {
 public:
  void load(const WeightSource& ws, const std::string& family, const nlohmann::json& vision_config,
            const nlohmann::json& projector_config, int text_hidden);
  int tokens_per_tile() const { return tokens_per_tile_; }
  int tile_size() const { return encoder_.config().image_size; }
  void forward(Compute& c, const float* tile, float* out);

 private:
  std::string family_;
  VitEncoder encoder_;
  int text_hidden_ = 0;
  int tokens_per_tile_ = 0;
  // smolvlm
  int scale_factor_ = 1;
  Linear proj_;  // [text_hidden, D*scale^2]
  // llava
  bool drop_class_ = false;
  Act proj_act_ = Act::gelu;
  Linear linear1_, linear2_;
  // mobilevlm (linear1_, linear2_ are the MLP; GELU)
  bool ldp_v2_ = false;
  std::vector<LdpBlock> ldp_blocks_;  // v1
  Floats peg_w_, peg_b_;              // v2: depthwise 3x3 [C, 9] with bias, added to its input
  void ldp_forward(Compute& c, const float* feats, float* out);  // feats: the patch tokens [side*side, D]
  std::vector<float> hidden_, shuffled_, mid_, grid_a_, grid_b_;
};

}  // namespace edgevlm::cpu
