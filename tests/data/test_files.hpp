#pragma once
// Helpers for the data tests: a scratch directory removed afterwards, and raw file writers
// (plain and gzip) that build IDX bytes independently of the library's own writer.

#include <tmm/data/dataset.hpp>

#include <zlib.h>

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace tmm_test {

namespace fs = std::filesystem;

struct scratch_dir {
    fs::path path;
    scratch_dir() {
        std::string tmpl = (fs::temp_directory_path() / "tmm-data-test.XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path = tmpl;
    }
    ~scratch_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    fs::path operator/(const std::string& name) const { return path / name; }
    std::vector<std::string> entries() const {
        std::vector<std::string> out;
        for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename());
        return out;
    }
};

using bytes = std::vector<std::uint8_t>;

inline void append_be32(bytes& b, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<std::uint8_t>(v >> shift));
}

inline bytes be32s(std::initializer_list<std::uint32_t> values) {
    bytes b;
    for (auto v : values) append_be32(b, v);
    return b;
}

inline bytes concat(bytes a, const bytes& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

inline void write_raw(const fs::path& path, const bytes& data) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(data.data()),
              static_cast<std::streamsize>(data.size()));
    if (!out) throw std::runtime_error("cannot write " + path.string());
}

inline void write_gz(const fs::path& path, const bytes& data) {
    gzFile f = gzopen(path.string().c_str(), "wb");
    if (f == nullptr) throw std::runtime_error("cannot write " + path.string());
    if (!data.empty()) gzwrite(f, data.data(), static_cast<unsigned>(data.size()));
    gzclose(f);
}

inline bytes read_raw(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The message of the tmm::data::error that f throws; fails loudly if it throws nothing.
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const tmm::data::error& e) {
        return e.what();
    }
    return "<no tmm::data::error thrown>";
}

}  // namespace tmm_test
