// Element types. bf16 and f16 are storage types: CPU kernels compute them in fp32 and round on write.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iosfwd>
#include <string>
#include <type_traits>

namespace dcae {

enum class DType : uint8_t { f32, f64, bf16, f16, i64, i32, u8, boolean };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
DType dtype_from_name(const std::string& name);  // "f32", "float32", "bf16", "bfloat16", ...
bool is_floating(DType dtype);
bool is_reduced_float(DType dtype);  // bf16 or f16
std::ostream& operator<<(std::ostream& out, DType dtype);

// bfloat16: the top 16 bits of an IEEE float; conversion rounds to nearest even and keeps NaN a NaN.
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  explicit bf16(float value) {
    uint32_t u;
    std::memcpy(&u, &value, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);
      bits = static_cast<uint16_t>(u >> 16);
    }
  }
  operator float() const {
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

// IEEE 754 binary16 with subnormals, infinities and NaN; conversion rounds to nearest even.
struct f16 {
  uint16_t bits = 0;
  f16() = default;
  explicit f16(float value);
  operator float() const;
};

// Maps a C++ element type to its DType.
template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<f16> { static constexpr DType value = DType::f16; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::u8; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::boolean; };

// Converts one value between element types (through double; bf16/f16 round once on the way in).
template <typename T>
inline double to_double(T value) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) return static_cast<float>(value);
  else return static_cast<double>(value);
}
template <typename D>
inline D from_double(double value) {
  if constexpr (std::is_same_v<D, bf16> || std::is_same_v<D, f16>) return D(static_cast<float>(value));
  else if constexpr (std::is_same_v<D, bool>) return value != 0.0;
  else return static_cast<D>(value);
}
template <typename D, typename S>
inline D convert_value(S value) {
  if constexpr (std::is_same_v<D, S>) return value;
  else return from_double<D>(to_double(value));
}

// Calls fn.template operator()<T>() with T the C++ type of `dtype` (every dtype).
template <typename Fn>
decltype(auto) visit_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::f32: return fn.template operator()<float>();
    case DType::f64: return fn.template operator()<double>();
    case DType::bf16: return fn.template operator()<bf16>();
    case DType::f16: return fn.template operator()<f16>();
    case DType::i64: return fn.template operator()<int64_t>();
    case DType::i32: return fn.template operator()<int32_t>();
    case DType::u8: return fn.template operator()<uint8_t>();
    case DType::boolean: return fn.template operator()<bool>();
  }
  return fn.template operator()<float>();
}

}  // namespace dcae
