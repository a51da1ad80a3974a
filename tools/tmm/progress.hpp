// The training progress bar of the `tmm` program: one line redrawn in place on a terminal,
// or a plain line every 5% when stderr is a file or a pipe (logs stay readable).
#pragma once

#include <tmm/train/train.hpp>

#include <unistd.h>

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

namespace tmm::cli {

// 75 -> "1:15", 3725 -> "1:02:05".
inline std::string clock_time(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    const auto total = static_cast<long long>(std::llround(seconds));
    const long long h = total / 3600, m = total / 60 % 60, s = total % 60;
    return h > 0 ? fmt::format("{}:{:02}:{:02}", h, m, s) : fmt::format("{}:{:02}", m, s);
}

class progress_bar {
  public:
    explicit progress_bar(std::FILE* out = stderr) : out_(out), tty_(::isatty(::fileno(out))) {}

    // Called by the trainer; the loss shown is the mean over the iterations since the last
    // line drawn.
    void update(const training_progress& r) {
        const std::size_t done = r.iteration - std::min(r.iteration, last_iteration_);
        loss_sum_ += r.loss * double(done);
        loss_iterations_ += done;
        last_iteration_ = r.iteration;
        const bool last = r.iteration >= r.iterations;
        const double fraction = r.iterations == 0 ? 1.0 : double(r.iteration) / r.iterations;

        const auto now = std::chrono::steady_clock::now();
        if (tty_) {
            if (!last && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
        } else {
            const int step = int(fraction * 20.0);  // a line every 5%
            if (!last && step == last_step_) return;
            last_step_ = step;
        }
        last_draw_ = now;

        const double loss = loss_iterations_ > 0 ? loss_sum_ / double(loss_iterations_) : r.loss;
        loss_sum_ = 0;
        loss_iterations_ = 0;
        const std::string text = fmt::format(
            "iteration {}/{} ({:3.0f}%)  loss {:.4f}  {:.0f} images/s  elapsed {}  left {}",
            r.iteration, r.iterations, 100.0 * fraction, loss, r.images_per_second,
            clock_time(r.elapsed_seconds), clock_time(r.remaining_seconds));
        if (tty_) {
            constexpr int width = 24;
            const int filled = std::clamp(int(fraction * width), 0, width);
            // \r returns to the start of the line, \x1b[K clears what a longer line left.
            fmt::print(out_, "\r[{}{}] {}\x1b[K", std::string(filled, '#'),
                       std::string(width - filled, '.'), text);
            drawn_ = true;
            if (last) finish();
        } else {
            fmt::print(out_, "{}\n", text);
        }
        std::fflush(out_);
    }

    // Ends the redrawn line (call once training is over, also after an error).
    void finish() {
        if (tty_ && drawn_) fmt::print(out_, "\n");
        drawn_ = false;
        std::fflush(out_);
    }

  private:
    std::FILE* out_;
    bool tty_;
    bool drawn_ = false;
    int last_step_ = -1;
    std::size_t last_iteration_ = 0, loss_iterations_ = 0;
    double loss_sum_ = 0;
    std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace tmm::cli
