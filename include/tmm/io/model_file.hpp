// Saving and loading a model: the plan it was built for and its float parameters, in a
// versioned little-endian binary file with a CRC32, written atomically (temp file + rename).
// Every damaged, foreign or mismatched file is refused with tmm::model_file_error.
//
// Format, version 1 (all integers little-endian; floats IEEE-754 binary32, doubles binary64):
//
//   offset  size  field
//        0     8  magic "\x89TMM\r\n\x1a\n" (the high byte and line endings catch text-mode
//                 copies and truncating transfers)
//        8     4  u32 format version
//       12     4  u32 CRC32 (zlib) of the payload
//       16     8  u64 payload length n; the file ends exactly at byte 24 + n
//       24     n  payload:
//                   str  architecture name                 (str = u32 length, then bytes)
//                   plan: i32 height width image_channels pad patch grid_rows grid_cols,
//                         u32 leaves (0 gaussian, 1 categorical), i32 components values classes,
//                         u32 layer count, then per layer: u32 kind (0 conv, 1 pool),
//                         i32 in_rows in_cols out_rows out_cols in_channels out_channels
//                         weight_sets window_size, u32 fixed, i32 list set_of_position,
//                         i32 list members, f64 list fixed_weights     (list = u32 count, items)
//                   u32 array count, then per array: str name, u64 count, count x f32
//                   (arrays: mean, log_precision, logits, theta.<l> for every layer, log_prior;
//                   log_prior is log P(y): its exponentials sum to 1 within prior_tolerance;
//                   -inf, probability zero, only in logits, theta.<l> and log_prior, and never
//                   for a whole row: a leaf's V logits, a conv output's in_channels logits)
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "../parameters.hpp"
#include "../plan.hpp"
#include "atomic_file.hpp"

namespace tmm {

// Thrown for every model file that cannot be written or read. The message names the file,
// the byte offset where it applies, and the problem.
class model_file_error : public std::runtime_error {
  public:
    model_file_error(const std::filesystem::path& file, std::optional<std::uint64_t> offset,
                     const std::string& problem)
        : std::runtime_error(message(file, offset, problem)), file_(file), offset_(offset) {}

    const std::filesystem::path& file() const { return file_; }
    std::optional<std::uint64_t> offset() const { return offset_; }

  private:
    static std::string message(const std::filesystem::path& file,
                               std::optional<std::uint64_t> offset, const std::string& problem) {
        std::string m = "model file " + file.string() + ": ";
        if (offset) m += "byte offset " + std::to_string(*offset) + ": ";
        return m + problem;
    }

    std::filesystem::path file_;
    std::optional<std::uint64_t> offset_;
};

inline constexpr std::array<unsigned char, 8> model_file_magic = {0x89, 'T',  'M',  'M',
                                                                  '\r', '\n', 0x1a, '\n'};
inline constexpr std::uint32_t model_file_version = 1;
inline constexpr std::size_t model_file_header_size = 24;
inline constexpr std::size_t model_file_max_architecture = 255;

// A model as read back: the architecture name and plan it was saved with, its parameters,
// and the plan's fingerprint (CRC32 of the plan's encoding in the file).
struct loaded_model {
    std::string architecture;
    plan structure;
    parameters<float> params;
    std::uint32_t plan_fingerprint = 0;
};

namespace detail {

// ---- encoding ----------------------------------------------------------------------------

class model_writer {
  public:
    void u8(std::uint8_t v) { bytes_.push_back(v); }
    void u32(std::uint32_t v) {
        for (int i = 0; i < 4; ++i) bytes_.push_back(std::uint8_t(v >> (8 * i)));
    }
    void u64(std::uint64_t v) {
        for (int i = 0; i < 8; ++i) bytes_.push_back(std::uint8_t(v >> (8 * i)));
    }
    void i32(int v) { u32(std::bit_cast<std::uint32_t>(std::int32_t(v))); }
    void f32(float v) { u32(std::bit_cast<std::uint32_t>(v)); }
    void f64(double v) { u64(std::bit_cast<std::uint64_t>(v)); }
    void str(std::string_view s) {
        u32(std::uint32_t(s.size()));
        bytes_.insert(bytes_.end(), s.begin(), s.end());
    }
    template <class T, class Put>
    void list(const std::vector<T>& v, Put put) {
        u32(std::uint32_t(v.size()));
        for (const T& x : v) (this->*put)(x);
    }
    std::vector<std::uint8_t>& bytes() { return bytes_; }

  private:
    std::vector<std::uint8_t> bytes_;
};

inline void encode_plan(model_writer& w, const plan& p) {
    for (int v : {p.height, p.width, p.image_channels, p.pad, p.patch, p.grid_rows, p.grid_cols})
        w.i32(v);
    w.u32(p.leaves == leaf_kind::gaussian ? 0 : 1);
    for (int v : {p.components, p.values, p.classes}) w.i32(v);
    w.u32(std::uint32_t(p.layers.size()));
    for (const layer& l : p.layers) {
        w.u32(l.kind == layer_kind::conv ? 0 : 1);
        for (int v : {l.in_rows, l.in_cols, l.out_rows, l.out_cols, l.in_channels, l.out_channels,
                      l.weight_sets, l.window_size})
            w.i32(v);
        w.u32(l.fixed ? 1 : 0);
        w.list(l.set_of_position, &model_writer::i32);
        w.list(l.members, &model_writer::i32);
        w.list(l.fixed_weights, &model_writer::f64);
    }
}

inline std::uint32_t crc32_of(std::span<const std::uint8_t> bytes) {
    uLong crc = ::crc32(0L, Z_NULL, 0);
    // zlib takes 32-bit lengths: feed large payloads in pieces.
    for (std::size_t at = 0; at < bytes.size();) {
        const std::size_t n = std::min<std::size_t>(bytes.size() - at, 1u << 30);
        crc = ::crc32(crc, bytes.data() + at, uInt(n));
        at += n;
    }
    return std::uint32_t(crc);
}

// The arrays of `params` in file order with their names; theta gets one entry per layer.
template <class F>
void for_each_named_array(const parameters<float>& params, F&& f) {
    f(std::string("mean"), params.mean);
    f(std::string("log_precision"), params.log_precision);
    f(std::string("logits"), params.logits);
    for (std::size_t l = 0; l < params.theta.size(); ++l)
        f("theta." + std::to_string(l), params.theta[l]);
    f(std::string("log_prior"), params.log_prior);
}

// The whole file, header included, without any check of the contents (save_model checks
// first; tests use this to craft files that save_model would refuse to write).
inline std::vector<std::uint8_t> encode_model(const plan& p, const parameters<float>& params,
                                              std::string_view architecture) {
    model_writer payload;
    payload.str(architecture);
    encode_plan(payload, p);
    payload.u32(std::uint32_t(3 + params.theta.size() + 1));
    for_each_named_array(params, [&](const std::string& name, const std::vector<float>& a) {
        payload.str(name);
        payload.u64(a.size());
        for (float v : a) payload.f32(v);
    });

    model_writer file;
    file.bytes().assign(model_file_magic.begin(), model_file_magic.end());
    file.u32(model_file_version);
    file.u32(crc32_of(payload.bytes()));
    file.u64(payload.bytes().size());
    file.bytes().insert(file.bytes().end(), payload.bytes().begin(), payload.bytes().end());
    return std::move(file.bytes());
}

// ---- checks shared by saving and loading ------------------------------------------------

// What each parameter array of `p` must hold, in file order, or an error when the plan's
// own numbers are impossible (negative, or too large to be real).
inline std::vector<std::size_t> expected_array_sizes(const plan& p, std::string& problem) {
    constexpr std::uint64_t limit = std::uint64_t(1) << 40;
    auto product = [&](std::initializer_list<std::int64_t> factors, const std::string& what) {
        std::uint64_t n = 1;
        for (std::int64_t f : factors) {
            if (f < 0) {
                problem = what + " has a negative size (" + std::to_string(f) + ")";
                return std::uint64_t(0);
            }
            n *= std::uint64_t(f);
            if (n > limit) {
                problem = what + " would hold more than 2^40 values";
                return std::uint64_t(0);
            }
        }
        return n;
    };
    std::vector<std::size_t> sizes;
    const std::uint64_t leaf =
        product({p.components, p.patch, p.patch, p.image_channels}, "the representation layer");
    const bool gaussian = p.leaves == leaf_kind::gaussian;
    sizes.push_back(gaussian ? leaf : 0);
    sizes.push_back(gaussian ? leaf : 0);
    sizes.push_back(gaussian ? 0
                             : product({std::int64_t(leaf), p.values}, "the categorical leaves"));
    for (std::size_t l = 0; l < p.layers.size(); ++l) {
        const layer& ly = p.layers[l];
        sizes.push_back(ly.fixed ? 0
                                 : product({ly.weight_sets, ly.out_channels, ly.in_channels},
                                           "layer " + std::to_string(l)));
    }
    sizes.push_back(product({p.classes}, "the class prior"));
    return sizes;
}

// Whether array `name` may hold -inf (a probability of zero, as tmm::validate allows): the
// categorical logits, the conv logits and the class prior; never the Gaussians.
inline bool may_hold_minus_infinity(const std::string& name) {
    return name == "logits" || name == "log_prior" || name.rfind("theta.", 0) == 0;
}

// The values per normalised row of array `name` of plan p (0: no rows to check here; the
// class prior is checked as a distribution).
inline std::size_t row_length(const plan& p, const std::string& name) {
    if (name == "logits") return std::size_t(p.values);
    if (name.rfind("theta.", 0) == 0)
        return std::size_t(p.layers.at(std::stoul(name.substr(6))).in_channels);
    return 0;
}

// The index of the first value of a row of `a` that is entirely -inf (nothing to normalise),
// or a.size() when there is none.
inline std::size_t impossible_row(const std::vector<float>& a, std::size_t row) {
    if (row == 0) return a.size();
    for (std::size_t start = 0; start + row <= a.size(); start += row)
        if (std::all_of(a.begin() + std::ptrdiff_t(start), a.begin() + std::ptrdiff_t(start + row),
                        [](float v) { return v == -std::numeric_limits<float>::infinity(); }))
            return start;
    return a.size();
}

inline std::string impossible_row_message(const std::string& name, std::size_t start,
                                          std::size_t row) {
    return "array " + name + " row " + std::to_string(start / row) + " (values " +
           std::to_string(start) + ".." + std::to_string(start + row - 1) +
           ") is entirely -inf: a distribution needs a value of non-zero probability";
}

// Empty when the class prior of a model file is a distribution; else the sum found.
inline std::string log_prior_problem(const std::vector<float>& log_prior) {
    const std::string problem = prior_problem(std::span<const float>(log_prior));
    if (problem.empty()) return {};
    return "array log_prior is not a log distribution over the " +
           std::to_string(log_prior.size()) + " classes: " + problem;
}

// Empty when `params` fits `p` and every value is allowed; else the first problem. NaN and +inf
// are never allowed; -inf only where may_hold_minus_infinity, never for a whole row, and the
// class prior's probabilities must sum to 1.
inline std::string parameters_problem(const plan& p, const parameters<float>& params) {
    std::string problem;
    const auto sizes = expected_array_sizes(p, problem);
    if (!problem.empty()) return "impossible plan: " + problem;
    if (params.theta.size() != p.layers.size())
        return "the parameters have " + std::to_string(params.theta.size()) +
               " theta arrays, the plan has " + std::to_string(p.layers.size()) + " layers";
    std::size_t index = 0;
    for_each_named_array(params, [&](const std::string& name, const std::vector<float>& a) {
        const std::size_t expected = sizes[index++];
        if (!problem.empty()) return;
        if (a.size() != expected) {
            problem = "array " + name + " holds " + std::to_string(a.size()) +
                      " values, the plan needs " + std::to_string(expected);
            return;
        }
        for (std::size_t i = 0; i < a.size(); ++i) {
            const bool allowed =
                std::isfinite(a[i]) ||
                (may_hold_minus_infinity(name) && a[i] == -std::numeric_limits<float>::infinity());
            if (!allowed) {
                problem = "array " + name + " value " + std::to_string(i) + " is " +
                          (std::isnan(a[i]) ? "NaN"
                           : a[i] > 0       ? "+inf"
                                            : "-inf");
                return;
            }
        }
        const std::size_t row = row_length(p, name);
        if (const std::size_t start = impossible_row(a, row); start < a.size())
            problem = impossible_row_message(name, start, row);
    });
    if (problem.empty()) problem = log_prior_problem(params.log_prior);
    return problem;
}

// ---- decoding -----------------------------------------------------------------------------

class model_reader {
  public:
    model_reader(const std::filesystem::path& file, std::span<const std::uint8_t> payload)
        : file_(file), bytes_(payload) {}

    std::uint64_t offset() const { return model_file_header_size + at_; }

    [[noreturn]] void fail(std::uint64_t offset, const std::string& problem) const {
        throw model_file_error(file_, offset, problem);
    }

    void need(std::uint64_t n, const std::string& what) const {
        if (n > bytes_.size() - at_)
            fail(offset(), "malformed payload: " + what + " needs " + std::to_string(n) +
                               " bytes, only " + std::to_string(bytes_.size() - at_) +
                               " remain before the end of the payload");
    }
    std::uint32_t u32(const std::string& what) {
        need(4, what);
        std::uint32_t v = 0;
        for (int i = 0; i < 4; ++i) v |= std::uint32_t(bytes_[at_ + i]) << (8 * i);
        at_ += 4;
        return v;
    }
    std::uint64_t u64(const std::string& what) {
        need(8, what);
        std::uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v |= std::uint64_t(bytes_[at_ + i]) << (8 * i);
        at_ += 8;
        return v;
    }
    int i32(const std::string& what) { return std::bit_cast<std::int32_t>(u32(what)); }
    float f32(const std::string& what) { return std::bit_cast<float>(u32(what)); }
    double f64(const std::string& what) { return std::bit_cast<double>(u64(what)); }
    std::uint32_t flag(const std::string& what, std::uint32_t max) {
        const std::uint64_t start = offset();
        const std::uint32_t v = u32(what);
        if (v > max)
            fail(start, "malformed payload: " + what + " is " + std::to_string(v) +
                            ", expected 0.." + std::to_string(max));
        return v;
    }
    std::string str(const std::string& what, std::size_t max) {
        const std::uint64_t start = offset();
        const std::uint32_t n = u32(what + " length");
        if (n > max)
            fail(start, "malformed payload: " + what + " is " + std::to_string(n) +
                            " bytes long, at most " + std::to_string(max) + " allowed");
        need(n, what);
        std::string s(reinterpret_cast<const char*>(bytes_.data() + at_), n);
        at_ += n;
        return s;
    }
    // A counted list of items of `item_size` bytes; the count is checked against the bytes
    // left before anything is allocated.
    template <class T, class Get>
    std::vector<T> list(const std::string& what, std::size_t item_size, Get get) {
        const std::uint32_t n = u32(what + " count");
        need(std::uint64_t(n) * item_size, what);
        std::vector<T> v(n);
        for (auto& x : v) x = (this->*get)(what);
        return v;
    }
    std::span<const std::uint8_t> take(std::uint64_t n, const std::string& what) {
        need(n, what);
        auto s = bytes_.subspan(at_, n);
        at_ += n;
        return s;
    }
    bool at_end() const { return at_ == bytes_.size(); }
    std::span<const std::uint8_t> consumed_since(std::uint64_t file_offset) const {
        const std::size_t start = file_offset - model_file_header_size;
        return bytes_.subspan(start, at_ - start);
    }

  private:
    std::filesystem::path file_;
    std::span<const std::uint8_t> bytes_;
    std::size_t at_ = 0;
};

inline plan decode_plan(model_reader& r) {
    plan p;
    for (int* v :
         {&p.height, &p.width, &p.image_channels, &p.pad, &p.patch, &p.grid_rows, &p.grid_cols})
        *v = r.i32("plan header");
    p.leaves = r.flag("leaf kind", 1) == 0 ? leaf_kind::gaussian : leaf_kind::categorical;
    for (int* v : {&p.components, &p.values, &p.classes}) *v = r.i32("plan header");
    const std::uint32_t layers = r.u32("layer count");
    // Every layer takes at least 52 bytes: refuse an absurd count before allocating.
    r.need(std::uint64_t(layers) * 52, std::to_string(layers) + " layers");
    p.layers.resize(layers);
    for (std::uint32_t i = 0; i < layers; ++i) {
        layer& l = p.layers[i];
        const std::string what = "layer " + std::to_string(i);
        l.kind = r.flag(what + " kind", 1) == 0 ? layer_kind::conv : layer_kind::pool;
        for (int* v : {&l.in_rows, &l.in_cols, &l.out_rows, &l.out_cols, &l.in_channels,
                       &l.out_channels, &l.weight_sets, &l.window_size})
            *v = r.i32(what);
        l.fixed = r.flag(what + " fixed flag", 1) == 1;
        l.set_of_position = r.list<int>(what + " set_of_position", 4, &model_reader::i32);
        l.members = r.list<int>(what + " members", 4, &model_reader::i32);
        l.fixed_weights = r.list<double>(what + " fixed_weights", 8, &model_reader::f64);
    }
    return p;
}

inline loaded_model decode_payload(const std::filesystem::path& file,
                                   std::span<const std::uint8_t> payload) {
    model_reader r(file, payload);
    loaded_model m;
    {
        const std::uint64_t start = r.offset();
        m.architecture = r.str("architecture name", model_file_max_architecture);
        if (m.architecture.empty()) r.fail(start, "malformed payload: empty architecture name");
    }
    const std::uint64_t plan_start = r.offset();
    m.structure = decode_plan(r);
    m.plan_fingerprint = crc32_of(r.consumed_since(plan_start));
    // The plan must describe a network that can run (layer sizes that chain, pooling members
    // in range, ...), whether or not the caller expects a particular one.
    if (const std::string bad = plan_problem(m.structure); !bad.empty())
        r.fail(plan_start, "malformed plan: " + bad);

    std::string problem;
    const auto sizes = expected_array_sizes(m.structure, problem);
    if (!problem.empty()) r.fail(plan_start, "malformed plan: " + problem);

    std::vector<std::string> names = {"mean", "log_precision", "logits"};
    for (std::size_t l = 0; l < m.structure.layers.size(); ++l)
        names.push_back("theta." + std::to_string(l));
    names.push_back("log_prior");
    {
        const std::uint64_t start = r.offset();
        const std::uint32_t count = r.u32("array count");
        if (count != names.size())
            r.fail(start, "the file holds " + std::to_string(count) +
                              " parameter arrays, its plan (" +
                              std::to_string(m.structure.layers.size()) + " layers) needs " +
                              std::to_string(names.size()));
    }
    m.params.theta.resize(m.structure.layers.size());
    std::vector<std::vector<float>*> targets = {&m.params.mean, &m.params.log_precision,
                                                &m.params.logits};
    for (auto& t : m.params.theta) targets.push_back(&t);
    targets.push_back(&m.params.log_prior);

    for (std::size_t a = 0; a < names.size(); ++a) {
        const std::uint64_t name_at = r.offset();
        const std::string name = r.str("array name", 64);
        if (name != names[a])
            r.fail(name_at, "parameter array " + std::to_string(a) + " is named \"" + name +
                                "\", expected \"" + names[a] + "\"");
        const std::uint64_t count_at = r.offset();
        const std::uint64_t count = r.u64("array " + name + " length");
        if (count != sizes[a])
            r.fail(count_at, "array " + name + " holds " + std::to_string(count) +
                                 " values, the plan in the file needs " + std::to_string(sizes[a]));
        const std::uint64_t values_at = r.offset();
        const auto raw = r.take(count * 4, "array " + name);
        auto& out = *targets[a];
        out.resize(count);
        for (std::size_t i = 0; i < count; ++i) {
            std::uint32_t bits = 0;
            for (int b = 0; b < 4; ++b) bits |= std::uint32_t(raw[4 * i + b]) << (8 * b);
            const float v = std::bit_cast<float>(bits);
            const bool allowed = std::isfinite(v) || (may_hold_minus_infinity(name) &&
                                                      v == -std::numeric_limits<float>::infinity());
            if (!allowed)
                r.fail(values_at + 4 * i, "array " + name + " value " + std::to_string(i) + " is " +
                                              (std::isnan(v) ? "NaN"
                                               : v > 0       ? "+inf"
                                                             : "-inf") +
                                              (may_hold_minus_infinity(name)
                                                   ? "; this array holds finite values or -inf only"
                                                   : "; this array holds finite values only"));
            out[i] = v;
        }
        const std::size_t row = row_length(m.structure, name);
        if (const std::size_t start = impossible_row(out, row); start < out.size())
            r.fail(values_at + 4 * start, impossible_row_message(name, start, row));
        if (a + 1 == names.size())
            if (const std::string bad = log_prior_problem(out); !bad.empty())
                r.fail(values_at, bad);
    }
    if (!r.at_end())
        r.fail(r.offset(), "malformed payload: unexpected bytes after the last parameter array");
    return m;
}

// "a x b x c" for messages.
inline std::string dims(int a, int b, int c) {
    return std::to_string(a) + "x" + std::to_string(b) + "x" + std::to_string(c);
}

template <class T>
std::string first_difference(const std::vector<T>& file, const std::vector<T>& expected) {
    if (file.size() != expected.size())
        return std::to_string(file.size()) + " entries in the file, " +
               std::to_string(expected.size()) + " expected";
    for (std::size_t i = 0; i < file.size(); ++i)
        if (!(file[i] == expected[i]))
            return "entry " + std::to_string(i) + " is " + std::to_string(file[i]) +
                   " in the file, " + std::to_string(expected[i]) + " expected";
    return {};
}

// ---- atomic writing -----------------------------------------------------------------------

// tmm::io::write_file_atomically with its error turned into a model_file_error.
inline void write_file_atomically(const std::filesystem::path& path,
                                  std::span<const std::uint8_t> bytes) {
    try {
        io::write_file_atomically(path, bytes);
    } catch (const io::atomic_write_error& e) {
        throw model_file_error(path, std::nullopt, e.problem());
    }
}

}  // namespace detail

// Empty when the two plans describe the same network; else the first difference, worded
// as "<what> is <value> in the file, <value> expected".
inline std::string plan_difference(const plan& file, const plan& expected) {
    using detail::dims;
    auto differ = [](const std::string& what, const std::string& in_file,
                     const std::string& wanted) {
        return what + " is " + in_file + " in the file, " + wanted + " expected";
    };
    if (file.height != expected.height || file.width != expected.width ||
        file.image_channels != expected.image_channels)
        return differ("the input image", dims(file.height, file.width, file.image_channels),
                      dims(expected.height, expected.width, expected.image_channels));
    if (file.pad != expected.pad)
        return differ("the padding", std::to_string(file.pad), std::to_string(expected.pad));
    if (file.patch != expected.patch)
        return differ("the patch size", std::to_string(file.patch), std::to_string(expected.patch));
    if (file.grid_rows != expected.grid_rows || file.grid_cols != expected.grid_cols)
        return differ(
            "the patch grid", std::to_string(file.grid_rows) + "x" + std::to_string(file.grid_cols),
            std::to_string(expected.grid_rows) + "x" + std::to_string(expected.grid_cols));
    auto leaves = [](const plan& p) {
        return std::string(p.leaves == leaf_kind::gaussian ? "gaussian" : "categorical");
    };
    if (file.leaves != expected.leaves)
        return differ("the leaf kind", leaves(file), leaves(expected));
    if (file.components != expected.components)
        return differ("the number of mixing components", std::to_string(file.components),
                      std::to_string(expected.components));
    if (file.values != expected.values)
        return differ("the number of categorical values", std::to_string(file.values),
                      std::to_string(expected.values));
    if (file.classes != expected.classes)
        return differ("the number of classes", std::to_string(file.classes),
                      std::to_string(expected.classes));
    if (file.layers.size() != expected.layers.size())
        return differ("the number of layers", std::to_string(file.layers.size()),
                      std::to_string(expected.layers.size()));
    for (std::size_t i = 0; i < file.layers.size(); ++i) {
        const layer &a = file.layers[i], &b = expected.layers[i];
        auto kind = [](const layer& l) {
            return std::string(l.kind == layer_kind::conv ? "conv" : "pool");
        };
        const std::string name = "layer " + std::to_string(i) + " (" + kind(b) + ")";
        auto number = [&](const char* what, int x, int y) -> std::string {
            return x == y ? "" : differ(name + " " + what, std::to_string(x), std::to_string(y));
        };
        if (a.kind != b.kind) return differ("layer " + std::to_string(i), kind(a), kind(b));
        for (const std::string& d : {number("input rows", a.in_rows, b.in_rows),
                                     number("input columns", a.in_cols, b.in_cols),
                                     number("output rows", a.out_rows, b.out_rows),
                                     number("output columns", a.out_cols, b.out_cols),
                                     number("input channels", a.in_channels, b.in_channels),
                                     number("output channels", a.out_channels, b.out_channels),
                                     number("weight sets", a.weight_sets, b.weight_sets),
                                     number("window size", a.window_size, b.window_size)})
            if (!d.empty()) return d;
        if (a.fixed != b.fixed)
            return differ(name + " weights", a.fixed ? "constant" : "learned",
                          b.fixed ? "constant" : "learned");
        if (auto d = detail::first_difference(a.set_of_position, b.set_of_position); !d.empty())
            return name + " weight sharing differs: " + d;
        if (auto d = detail::first_difference(a.members, b.members); !d.empty())
            return name + " pooling windows differ: " + d;
        if (auto d = detail::first_difference(a.fixed_weights, b.fixed_weights); !d.empty())
            return name + " constant weights differ: " + d;
    }
    return {};
}

// CRC32 of the plan's encoding: equal plans have equal fingerprints.
inline std::uint32_t plan_fingerprint(const plan& p) {
    detail::model_writer w;
    detail::encode_plan(w, p);
    return detail::crc32_of(w.bytes());
}

// Writes `params` for the network `p` under the name `architecture` (1..255 bytes). The file
// is written to a temporary file `.<name>.tmp.XXXXXX` beside it, flushed to disk, then renamed
// over `path`; on any error the temporary file is removed and an existing `path` is left
// untouched. A `path` that exists and is not a regular file (a device, FIFO, socket,
// directory, or a link to one) is refused before anything is written.
inline void save_model(const std::filesystem::path& path, const plan& p,
                       const parameters<float>& params, std::string_view architecture) {
    if (architecture.empty() || architecture.size() > model_file_max_architecture)
        throw model_file_error(path, std::nullopt,
                               "the architecture name must be 1 to " +
                                   std::to_string(model_file_max_architecture) +
                                   " bytes long, got " + std::to_string(architecture.size()) +
                                   "; nothing was written");
    if (const std::string problem = detail::parameters_problem(p, params); !problem.empty())
        throw model_file_error(path, std::nullopt,
                               "refusing to save: " + problem + "; nothing was written");
    detail::write_file_atomically(path, detail::encode_model(p, params, architecture));
}

// Reads and checks a model file: magic, version, length, CRC, then every field. The plan
// returned is the one stored in the file; use the overload below to insist on a given one.
inline loaded_model load_model(const std::filesystem::path& path) {
    // Only a regular file is opened: opening a FIFO would block until a writer came.
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        const int e = errno;
        throw model_file_error(path, std::nullopt,
                               e == ENOENT ? std::string("no such file")
                                           : std::string("cannot open: ") + std::strerror(e));
    }
    if (S_ISDIR(st.st_mode))
        throw model_file_error(path, std::nullopt, "is a directory, expected a model file");
    if (!S_ISREG(st.st_mode))
        throw model_file_error(path, std::nullopt,
                               std::string("is not a regular file (") +
                                   io::detail::file_kind(st.st_mode) + "), expected a model file");

    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw model_file_error(path, std::nullopt,
                               std::string("cannot open: ") + std::strerror(errno));
    const auto fail = [&](std::uint64_t offset, const std::string& problem) {
        throw model_file_error(path, offset, problem);
    };

    std::array<unsigned char, model_file_header_size> header{};
    in.read(reinterpret_cast<char*>(header.data()), header.size());
    const std::size_t got = std::size_t(in.gcount());
    const std::size_t magic_seen = std::min(got, model_file_magic.size());
    if (!std::equal(header.begin(), header.begin() + magic_seen, model_file_magic.begin()))
        fail(0, "bad magic bytes: this is not a tmm model file");
    if (got == 0) fail(0, "empty file, truncated or not a tmm model file");

    auto read_le = [&](std::size_t at, int bytes) {
        std::uint64_t v = 0;
        for (int i = 0; i < bytes; ++i) v |= std::uint64_t(header[at + i]) << (8 * i);
        return v;
    };
    if (got >= 12) {
        const auto version = std::uint32_t(read_le(8, 4));
        if (version != model_file_version)
            fail(8, "unsupported format version " + std::to_string(version) +
                        "; this build of tmm reads version " + std::to_string(model_file_version) +
                        " only");
    }
    if (got < header.size())
        fail(got, "truncated: the file ends inside the " + std::to_string(header.size()) +
                      "-byte header");
    const auto crc = std::uint32_t(read_le(12, 4));
    const std::uint64_t length = read_le(16, 8);

    std::error_code ec;
    const std::uint64_t file_size = std::filesystem::file_size(path, ec);
    if (ec) throw model_file_error(path, std::nullopt, "cannot get the file size: " + ec.message());
    const std::uint64_t present = file_size - header.size();
    if (present < length)
        fail(file_size, "truncated: the header (byte offset 16) announces a " +
                            std::to_string(length) + "-byte payload, the file ends after " +
                            std::to_string(present) + " of them");
    if (present > length)
        fail(header.size() + length, std::to_string(present - length) +
                                         " unexpected bytes after the " + std::to_string(length) +
                                         "-byte payload (the file was appended to or damaged)");

    std::vector<std::uint8_t> payload(length);
    in.read(reinterpret_cast<char*>(payload.data()), std::streamsize(length));
    if (std::uint64_t(in.gcount()) != length)
        fail(header.size() + std::uint64_t(in.gcount()),
             "truncated: read stopped before the end of the payload (file changed while reading?)");

    const std::uint32_t actual = detail::crc32_of(payload);
    if (actual != crc) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "0x%08x, the header (byte offset 12) says 0x%08x", actual,
                      crc);
        fail(header.size(), "corrupted: the CRC32 of the payload is " + std::string(buf));
    }
    return detail::decode_payload(path, payload);
}

// As above, and throws unless the file was saved for exactly the network `expected`; the
// message says what differs.
inline loaded_model load_model(const std::filesystem::path& path, const plan& expected) {
    loaded_model m = load_model(path);
    if (const std::string d = plan_difference(m.structure, expected); !d.empty())
        throw model_file_error(path, std::nullopt,
                               "saved for a different network (architecture \"" + m.architecture +
                                   "\" in the file): " + d);
    return m;
}

}  // namespace tmm
