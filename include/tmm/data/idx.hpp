#pragma once
// Reading and writing IDX files (the MNIST format), gzipped or not. Readers refuse anything
// malformed with a tmm::data::error naming the file, the byte offset and what was expected;
// writers go through a temporary file and a rename, so a reader never sees half a file.

#include <tmm/data/dataset.hpp>
#include <tmm/io/atomic_file.hpp>

#include <zlib.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace tmm::data {

enum class idx_compression { plain, gzip };

// The pixels of an IDX image file; a 4-dimensional file (count, rows, cols, channels) is read
// as channel-last colour images, the usual 3-dimensional one as channels = 1.
struct idx_images {
    std::size_t count = 0;
    int rows = 0;
    int cols = 0;
    int channels = 1;
    std::vector<std::uint8_t> pixels;
};

// A header may claim any 32-bit sizes; past this many payload bytes it is taken as corrupt
// rather than trusted with an allocation.
inline constexpr std::uint64_t idx_max_payload_bytes = std::uint64_t{1} << 36;

namespace detail {

inline constexpr std::uint32_t idx_ubyte_images_magic = 0x00000803;
inline constexpr std::uint32_t idx_ubyte_labels_magic = 0x00000801;

inline std::string hex32(std::uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", v);
    return buf;
}

inline std::string hex8(unsigned v) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", v & 0xFFu);
    return buf;
}

inline std::string idx_type_name(unsigned code) {
    switch (code) {
        case 0x08:
            return "unsigned byte";
        case 0x09:
            return "signed byte";
        case 0x0B:
            return "int16";
        case 0x0C:
            return "int32";
        case 0x0D:
            return "float32";
        case 0x0E:
            return "float64";
        default:
            return "no IDX type";
    }
}

// Sequential reader over a plain or gzipped file that knows its offset in the (decompressed)
// byte stream, so every error can say where it happened. A file that starts with the gzip
// magic 0x1f 0x8b is inflated by zlib member by member: several members are one stream, as
// for gzip -d (RFC 1952, section 2.2); bytes after the last member that do not start another
// are refused (gzip -d warns and ignores them, zlib's gzread ignores them silently).
class idx_reader {
  public:
    explicit idx_reader(const std::filesystem::path& path) : path_(path.string()) {
        std::error_code ec;
        auto status = std::filesystem::status(path, ec);
        if (!std::filesystem::exists(status))
            throw error(path_ + ": no such file, expected an IDX file");
        if (std::filesystem::is_directory(status))
            throw error(path_ + ": is a directory, expected an IDX file");
        fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd_ < 0) throw error(path_ + ": cannot open: " + std::strerror(errno));
        buffer_.resize(std::size_t{1} << 17);
        try {
            fill(2);
        } catch (...) {
            ::close(fd_);
            throw;
        }
        gzip_ = starts_a_member();
        if (gzip_ && inflateInit2(&stream_, 15 + 16) != Z_OK) {  // 16: gzip wrapper only
            ::close(fd_);
            throw error(path_ + ": cannot start zlib: out of memory");
        }
    }
    idx_reader(const idx_reader&) = delete;
    idx_reader& operator=(const idx_reader&) = delete;
    ~idx_reader() {
        if (gzip_) inflateEnd(&stream_);
        ::close(fd_);
    }

    const std::string& path() const { return path_; }
    std::uint64_t offset() const { return offset_; }

    // Reads up to n bytes; fewer only at the end of the data. Corrupt gzip data throws.
    std::size_t read(void* dst, std::size_t n) {
        auto* out = static_cast<unsigned char*>(dst);
        const std::size_t got = gzip_ ? inflate_into(out, n) : copy_into(out, n);
        offset_ += got;
        return got;
    }

    // "path: byte offset N: " with a note when N counts decompressed bytes.
    std::string where(std::uint64_t off) const {
        return path_ + ": byte offset " + std::to_string(off) +
               (gzip_ ? " (of the decompressed data)" : "") + ": ";
    }

    // Why a read came up short inside a gzip member: the file ended in the middle of it.
    std::string short_read_reason() const {
        return cut_ ? " (unexpected end of file inside the gzip data)" : "";
    }

    void read_exact(void* dst, std::size_t n, const std::string& what) {
        std::uint64_t start = offset_;
        std::size_t got = read(dst, n);
        if (got != n)
            throw error(where(start) + "truncated " + what + ": expected " + std::to_string(n) +
                        " bytes, got " + std::to_string(got) + short_read_reason());
    }

    // Reads a payload of n bytes in chunks, so a header that lies about its size runs into
    // the end of the file instead of into one huge allocation.
    std::vector<std::uint8_t> read_payload(std::uint64_t n, const std::string& what) {
        std::vector<std::uint8_t> data;
        std::uint64_t start = offset_;
        constexpr std::size_t chunk = std::size_t{1} << 24;
        std::size_t got = 0;
        while (got < n) {
            std::size_t ask = static_cast<std::size_t>(std::min<std::uint64_t>(n - got, chunk));
            data.resize(got + ask);
            std::size_t r = read(data.data() + got, ask);
            got += r;
            if (r < ask) {
                throw error(where(start) + "truncated " + what + ": expected " + std::to_string(n) +
                            " bytes, got " + std::to_string(got) + short_read_reason());
            }
        }
        return data;
    }

    // The format has no end marker, so extra bytes mean the header and payload disagree. A
    // plain file's extra bytes are counted from its size; inside a gzip stream at most
    // idx_extra_scan bytes are decompressed to count them, so a stream that inflates to
    // gigabytes past the declared data (a gzip bomb) is refused at once.
    void expect_end(const std::string& what) {
        constexpr std::uint64_t idx_extra_scan = std::uint64_t{1} << 16;
        std::uint64_t start = offset_;
        if (!gzip_) {
            std::error_code ec;
            const std::uint64_t size = std::filesystem::file_size(path_, ec);
            if (!ec && size > start)
                throw error(where(start) + std::to_string(size - start) +
                            " unexpected bytes after " + what);
        }
        std::array<unsigned char, 1 << 14> sink;
        std::uint64_t extra = 0;
        for (;;) {
            std::size_t r = read(sink.data(), sink.size());
            extra += r;
            if (r < sink.size() || extra >= idx_extra_scan) break;
        }
        if (extra >= idx_extra_scan)
            throw error(where(start) + "at least " + std::to_string(extra) +
                        " unexpected bytes after " + what + " (not read further)");
        if (extra != 0)
            throw error(where(start) + std::to_string(extra) + " unexpected bytes after " + what);
        // All the data arrived, then the file ended inside the member: say, a lost trailer.
        if (cut_)
            throw error(where(start) + "the gzip stream ends early, after " + what +
                        " but before its checksum trailer" + short_read_reason());
    }

    std::uint32_t read_u32(const std::string& what) {
        unsigned char b[4];
        read_exact(b, 4, what);
        return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) |
               (std::uint32_t{b[2]} << 8) | std::uint32_t{b[3]};
    }

  private:
    // Unread bytes of the file in buffer_.
    std::size_t buffered() const { return end_ - begin_; }
    // Byte offset in the file of the first unread byte.
    std::uint64_t file_offset() const { return file_read_ - buffered(); }

    // Reads until at least `want` bytes are buffered or the file ends.
    void fill(std::size_t want) {
        if (begin_ > 0) {
            std::memmove(buffer_.data(), buffer_.data() + begin_, buffered());
            end_ -= begin_;
            begin_ = 0;
        }
        while (!eof_ && end_ < want) {
            const ssize_t r = ::read(fd_, buffer_.data() + end_, buffer_.size() - end_);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0)
                throw error(path_ + ": byte offset " + std::to_string(file_read_) +
                            (gzip_ ? " (of the gzip file)" : "") +
                            ": read failed: " + std::strerror(errno));
            eof_ = r == 0;
            end_ += static_cast<std::size_t>(r);
            file_read_ += static_cast<std::uint64_t>(r);
        }
    }

    bool starts_a_member() const {
        return buffered() >= 2 && buffer_[begin_] == 0x1f && buffer_[begin_ + 1] == 0x8b;
    }

    std::size_t copy_into(unsigned char* out, std::size_t n) {
        std::size_t got = 0;
        while (got < n) {
            if (buffered() == 0) fill(1);
            if (buffered() == 0) break;
            const std::size_t take = std::min(n - got, buffered());
            std::memcpy(out + got, buffer_.data() + begin_, take);
            begin_ += take;
            got += take;
        }
        return got;
    }

    std::size_t inflate_into(unsigned char* out, std::size_t n) {
        std::size_t got = 0;
        while (got < n) {
            if (member_done_) {
                if (!next_member()) break;
                continue;
            }
            if (buffered() == 0) fill(1);
            stream_.next_in = buffer_.data() + begin_;
            stream_.avail_in = static_cast<uInt>(buffered());
            stream_.next_out = out + got;
            // zlib counts in 32 bits
            const auto ask = static_cast<uInt>(std::min<std::size_t>(n - got, 1u << 30));
            stream_.avail_out = ask;
            const int code = inflate(&stream_, Z_NO_FLUSH);
            begin_ = end_ - stream_.avail_in;
            got += ask - stream_.avail_out;
            if (code == Z_STREAM_END) {
                member_done_ = true;
            } else if (code == Z_BUF_ERROR && buffered() == 0 && eof_) {
                cut_ = true;  // the file ends inside a member: the data stops here
                break;
            } else if (code != Z_OK) {
                // zlib decompresses ahead of the caller, so the offset only says how far the
                // good data reached.
                throw error(path_ + ": corrupt gzip data: " +
                            (stream_.msg != nullptr ? stream_.msg : zError(code)) +
                            " (found while reading from byte offset " +
                            std::to_string(offset_ + got) + " of the decompressed data)");
            }
        }
        return got;
    }

    // After a member's trailer: false at the end of the file, true when another member
    // starts; anything else is trailing garbage.
    bool next_member() {
        fill(2);
        if (buffered() == 0) return false;
        if (!starts_a_member()) {
            const std::uint64_t at = file_offset();
            std::error_code ec;
            const std::uint64_t size = std::filesystem::file_size(path_, ec);
            const std::uint64_t count = !ec && size > at ? size - at : buffered();
            throw error(path_ + ": byte offset " + std::to_string(at) + " (of the gzip file): " +
                        std::to_string(count) + (count == 1 ? " byte" : " bytes") +
                        " of trailing garbage after the end of the gzip data (not the start "
                        "of another gzip member)");
        }
        inflateReset(&stream_);
        member_done_ = false;
        return true;
    }

    std::string path_;
    int fd_ = -1;
    std::vector<unsigned char> buffer_;
    std::size_t begin_ = 0, end_ = 0;  // the unread bytes of buffer_
    std::uint64_t file_read_ = 0;      // bytes read from the file so far
    bool eof_ = false;
    bool gzip_ = false;
    z_stream stream_{};
    bool member_done_ = false;  // inflate has passed a member's trailer
    bool cut_ = false;          // the file ended inside a member
    std::uint64_t offset_ = 0;  // in the (decompressed) data
};

// Checks the 4-byte magic: two zero bytes, the element type, the dimension count.
inline void check_magic(idx_reader& in, std::uint32_t magic, std::uint32_t expected,
                        unsigned min_dims, unsigned max_dims, const char* kind,
                        const char* dims_meaning) {
    const std::string head = "bad magic " + hex32(magic) + ", expected " + hex32(expected) +
                             " (IDX " + kind + " of unsigned bytes)";
    if ((magic >> 16) != 0)
        throw error(in.where(0) + head + "; an IDX file starts with two zero bytes");
    unsigned type = (magic >> 8) & 0xFF;
    if (type != 0x08)
        throw error(in.where(2) + head + "; element type " + hex8(type) + " is " +
                    idx_type_name(type) + ", only 0x08 (unsigned byte) is supported");
    unsigned dims = magic & 0xFF;
    if (dims < min_dims || dims > max_dims) {
        std::string hint;
        if (expected == idx_ubyte_images_magic && dims == 1)
            hint = "; this looks like a label file";
        if (expected == idx_ubyte_labels_magic && dims >= 3)
            hint = "; this looks like an image file";
        throw error(in.where(3) + head + "; wrong dimension count " + std::to_string(dims) +
                    ", expected " + dims_meaning + hint);
    }
}

inline void put_u32(std::vector<std::uint8_t>& out, std::uint64_t v) {
    out.push_back(static_cast<std::uint8_t>(v >> 24));
    out.push_back(static_cast<std::uint8_t>(v >> 16));
    out.push_back(static_cast<std::uint8_t>(v >> 8));
    out.push_back(static_cast<std::uint8_t>(v));
}

// Writes header + payload through tmm::io::write_file_atomically: a temporary file beside
// `path`, renamed over it, so `path` is either the old file or the complete new one. A `path`
// that exists and is not a regular file (device, FIFO, socket, directory) is refused.
inline void write_file_atomically(const std::filesystem::path& path,
                                  std::span<const std::uint8_t> header,
                                  std::span<const std::uint8_t> payload,
                                  idx_compression compression) {
    const std::string target = path.string();
    auto fill = [&](int fd) {
        int gz_fd = ::dup(fd);
        if (gz_fd < 0) throw error(target + ": cannot write: " + std::strerror(errno));
        // "T" makes zlib write the bytes as they are, so both variants share one code path.
        gzFile gz = gzdopen(gz_fd, compression == idx_compression::gzip ? "wb6" : "wbT");
        if (gz == nullptr) {
            ::close(gz_fd);
            throw error(target + ": cannot write: gzdopen failed");
        }
        auto put = [&](std::span<const std::uint8_t> bytes) {
            std::size_t done = 0;
            while (done < bytes.size()) {
                unsigned n =
                    static_cast<unsigned>(std::min<std::size_t>(bytes.size() - done, 1u << 30));
                if (gzwrite(gz, bytes.data() + done, n) != static_cast<int>(n)) {
                    int code = 0;
                    std::string msg = gzerror(gz, &code);
                    gzclose(gz);
                    throw error(target + ": write failed: " + msg);
                }
                done += n;
            }
        };
        put(header);
        put(payload);
        if (gzclose(gz) != Z_OK) throw error(target + ": write failed while closing (disk full?)");
    };
    try {
        io::write_file_atomically(path, fill);
    } catch (const io::atomic_write_error& e) {
        throw error(e.what());
    }
}

}  // namespace detail

// Reads an IDX image file (magic 0x00000803, or 0x00000804 for channel-last colour images).
inline idx_images read_idx_images(const std::filesystem::path& path) {
    detail::idx_reader in(path);
    std::uint32_t magic = in.read_u32("header (magic number)");
    detail::check_magic(in, magic, detail::idx_ubyte_images_magic, 3, 4, "images",
                        "3 (count, rows, cols) or 4 (count, rows, cols, channels)");
    const unsigned dims = magic & 0xFF;

    static constexpr const char* names[] = {"image count", "rows", "cols", "channels"};
    std::uint64_t size[4] = {0, 0, 0, 1};
    for (unsigned d = 0; d < dims; ++d) {
        std::uint64_t at = in.offset();
        size[d] = in.read_u32(std::string("header (") + names[d] + ")");
        if (size[d] == 0) throw error(in.where(at) + names[d] + " is 0, expected at least 1");
        // Rows, cols and channels must fit an int; no image format comes near that.
        if (d > 0 && size[d] > (1u << 16))
            throw error(in.where(at) + names[d] + " is " + std::to_string(size[d]) +
                        ", more than the 65536 this reader accepts");
    }
    const std::uint64_t image_bytes = size[1] * size[2] * size[3];
    const std::string shape = std::to_string(size[1]) + "x" + std::to_string(size[2]) +
                              (dims == 4 ? "x" + std::to_string(size[3]) : "");
    if (image_bytes > idx_max_payload_bytes / size[0])
        throw error(in.where(4) + "header claims " + std::to_string(size[0]) + " images of " +
                    shape + ", more than the " + std::to_string(idx_max_payload_bytes >> 30) +
                    " GiB this reader accepts");

    idx_images out;
    out.count = static_cast<std::size_t>(size[0]);
    out.rows = static_cast<int>(size[1]);
    out.cols = static_cast<int>(size[2]);
    out.channels = static_cast<int>(size[3]);
    const std::string what =
        "pixel data (" + std::to_string(out.count) + " images of " + shape + ")";
    out.pixels = in.read_payload(size[0] * image_bytes, what);
    in.expect_end("the last of the " + std::to_string(out.count) + " images the header declares");
    return out;
}

// Reads an IDX label file (magic 0x00000801). With expected_classes > 0 every label must be
// below it; the error names the index and value of the first that is not.
inline std::vector<int> read_idx_labels(const std::filesystem::path& path,
                                        int expected_classes = 0) {
    if (expected_classes < 0 || expected_classes > 256)
        throw error(path.string() + ": expected class count " + std::to_string(expected_classes) +
                    " is outside 0..256 (0 means any)");
    detail::idx_reader in(path);
    std::uint32_t magic = in.read_u32("header (magic number)");
    detail::check_magic(in, magic, detail::idx_ubyte_labels_magic, 1, 1, "labels", "1 (count)");
    std::uint64_t count = in.read_u32("header (label count)");
    if (count == 0) throw error(in.where(4) + "label count is 0, expected at least 1");

    const std::uint64_t payload_at = in.offset();
    std::vector<std::uint8_t> bytes =
        in.read_payload(count, "label data (" + std::to_string(count) + " labels)");
    in.expect_end("the last of the " + std::to_string(count) + " labels the header declares");

    std::vector<int> labels(bytes.begin(), bytes.end());
    if (expected_classes > 0)
        for (std::size_t i = 0; i < labels.size(); ++i)
            if (labels[i] >= expected_classes)
                throw error(in.where(payload_at + i) + "label " + std::to_string(labels[i]) +
                            " at index " + std::to_string(i) + " is out of range, expected 0.." +
                            std::to_string(expected_classes - 1) + " (" +
                            std::to_string(expected_classes) + " classes)");
    return labels;
}

// Reads a matching pair of image and label files. With expected_classes = 0 the class count
// is the largest label + 1 and every class below it must occur (a gap means a broken file or
// a mislabelled set); otherwise labels are only checked to lie below expected_classes.
inline dataset load_idx_dataset(const std::filesystem::path& images_path,
                                const std::filesystem::path& labels_path,
                                int expected_classes = 0) {
    idx_images images = read_idx_images(images_path);
    std::vector<int> labels = read_idx_labels(labels_path, expected_classes);
    if (labels.size() != images.count)
        throw error(images_path.string() + " holds " + std::to_string(images.count) +
                    " images but " + labels_path.string() + " holds " +
                    std::to_string(labels.size()) + " labels; they must match");

    dataset out;
    out.count = images.count;
    out.rows = images.rows;
    out.cols = images.cols;
    out.channels = images.channels;
    out.pixels = std::move(images.pixels);
    out.labels = std::move(labels);
    if (expected_classes > 0) {
        out.classes = expected_classes;
    } else {
        std::vector<std::size_t> seen(256, 0);
        for (int l : out.labels) ++seen[static_cast<std::size_t>(l)];
        out.classes = *std::max_element(out.labels.begin(), out.labels.end()) + 1;
        for (int c = 0; c < out.classes; ++c)
            if (seen[static_cast<std::size_t>(c)] == 0)
                throw error(labels_path.string() + ": class " + std::to_string(c) +
                            " never occurs, yet labels go up to " +
                            std::to_string(out.classes - 1) +
                            "; classes must be 0..N-1 with none missing");
    }
    return out;
}

// Writes count images of rows x cols x channels bytes (3 dimensions when channels == 1, the
// usual MNIST layout; 4 otherwise).
inline void write_idx_images(const std::filesystem::path& path,
                             std::span<const std::uint8_t> pixels, std::size_t count, int rows,
                             int cols, int channels = 1,
                             idx_compression compression = idx_compression::plain) {
    const std::string target = path.string();
    if (count == 0 || rows <= 0 || cols <= 0 || channels <= 0)
        throw error(target + ": cannot write " + std::to_string(count) + " images of " +
                    std::to_string(rows) + "x" + std::to_string(cols) + "x" +
                    std::to_string(channels) + ": every size must be at least 1");
    if (count > UINT32_MAX)
        throw error(target + ": " + std::to_string(count) +
                    " images do not fit IDX's 32-bit count");
    const std::size_t image_bytes = static_cast<std::size_t>(rows) *
                                    static_cast<std::size_t>(cols) *
                                    static_cast<std::size_t>(channels);
    if (pixels.size() != count * image_bytes)
        throw error(target + ": " + std::to_string(pixels.size()) +
                    " pixel bytes given, expected " + std::to_string(count * image_bytes) +
                    " for " + std::to_string(count) + " images");
    std::vector<std::uint8_t> header;
    detail::put_u32(header, channels == 1 ? 0x00000803 : 0x00000804);
    detail::put_u32(header, count);
    detail::put_u32(header, static_cast<std::uint64_t>(rows));
    detail::put_u32(header, static_cast<std::uint64_t>(cols));
    if (channels != 1) detail::put_u32(header, static_cast<std::uint64_t>(channels));
    detail::write_file_atomically(path, header, pixels, compression);
}

inline void write_idx_images(const std::filesystem::path& path, const dataset& data,
                             idx_compression compression = idx_compression::plain) {
    write_idx_images(path, data.pixels, data.count, data.rows, data.cols, data.channels,
                     compression);
}

inline void write_idx_labels(const std::filesystem::path& path, std::span<const int> labels,
                             idx_compression compression = idx_compression::plain) {
    const std::string target = path.string();
    if (labels.empty()) throw error(target + ": cannot write an empty label file");
    if (labels.size() > UINT32_MAX)
        throw error(target + ": " + std::to_string(labels.size()) +
                    " labels do not fit IDX's 32-bit count");
    std::vector<std::uint8_t> payload(labels.size());
    for (std::size_t i = 0; i < labels.size(); ++i) {
        if (labels[i] < 0 || labels[i] > 255)
            throw error(target + ": label " + std::to_string(labels[i]) + " at index " +
                        std::to_string(i) + " does not fit in an unsigned byte (0..255)");
        payload[i] = static_cast<std::uint8_t>(labels[i]);
    }
    std::vector<std::uint8_t> header;
    detail::put_u32(header, 0x00000801);
    detail::put_u32(header, labels.size());
    detail::write_file_atomically(path, header, payload, compression);
}

inline void write_idx_dataset(const std::filesystem::path& images_path,
                              const std::filesystem::path& labels_path, const dataset& data,
                              idx_compression compression = idx_compression::plain) {
    data.validate(images_path.string());
    write_idx_images(images_path, data, compression);
    write_idx_labels(labels_path, data.labels, compression);
}

}  // namespace tmm::data
