#include "core/tensor/dtype.h"

#include <ostream>

#include "core/tensor/error.h"

namespace dcae {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f64:
    case DType::i64: return 8;
    case DType::f32:
    case DType::i32: return 4;
    case DType::bf16:
    case DType::f16: return 2;
    case DType::u8:
    case DType::boolean: return 1;
  }
  DCAE_FAIL("unknown dtype ", static_cast<int>(dtype));
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i64: return "i64";
    case DType::i32: return "i32";
    case DType::u8: return "u8";
    case DType::boolean: return "bool";
  }
  return "?";
}

DType dtype_from_name(const std::string& name) {
  if (name == "f32" || name == "float32" || name == "fp32" || name == "float") return DType::f32;
  if (name == "f64" || name == "float64" || name == "fp64" || name == "double") return DType::f64;
  if (name == "bf16" || name == "bfloat16") return DType::bf16;
  if (name == "f16" || name == "float16" || name == "fp16" || name == "half") return DType::f16;
  if (name == "i64" || name == "int64") return DType::i64;
  if (name == "i32" || name == "int32") return DType::i32;
  if (name == "u8" || name == "uint8") return DType::u8;
  if (name == "bool") return DType::boolean;
  DCAE_FAIL("unknown dtype name '", name, "' (expected f32, f64, bf16, f16, i64, i32, u8 or bool)");
}

bool is_floating(DType d) { return d == DType::f32 || d == DType::f64 || d == DType::bf16 || d == DType::f16; }
bool is_reduced_float(DType d) { return d == DType::bf16 || d == DType::f16; }

std::ostream& operator<<(std::ostream& out, DType dtype) { return out << dtype_name(dtype); }

f16::f16(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) {  // NaN
    bits = static_cast<uint16_t>(sign | 0x7e00u);
    return;
  }
  if (abs >= 0x477ff000u) {  // rounds to >= 65520: infinity
    bits = static_cast<uint16_t>(sign | 0x7c00u);
    return;
  }
  if (abs < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    // value * 2^24 gives the subnormal mantissa; add in float to get round-to-nearest-even from the FPU.
    float magnitude;
    std::memcpy(&magnitude, &abs, 4);
    const float scaled = magnitude + 0.5f;  // 0.5 = 2^-1 places 2^-24 at the last mantissa bit of the sum
    uint32_t s;
    std::memcpy(&s, &scaled, 4);
    bits = static_cast<uint16_t>(sign | (s - 0x3f000000u));
    return;
  }
  const uint32_t mantissa_odd = (abs >> 13) & 1u;
  uint32_t rounded = abs + 0xfffu + mantissa_odd;  // round to nearest even on the 13 dropped bits
  rounded -= 0x38000000u;                          // rebias exponent 127 -> 15
  bits = static_cast<uint16_t>(sign | (rounded >> 13));
}

f16::operator float() const {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  uint32_t out;
  if (exponent == 0) {
    if (mantissa == 0) {
      out = sign;
    } else {  // subnormal: value = mantissa * 2^-24
      float f = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
      std::memcpy(&out, &f, 4);
      out |= sign;
    }
  } else if (exponent == 31) {
    out = sign | 0x7f800000u | (mantissa << 13);
  } else {
    out = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &out, 4);
  return f;
}

}  // namespace dcae
