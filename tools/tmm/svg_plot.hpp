// A small line plot as SVG text: axes with ticks and labels, one polyline with markers per
// series, and a legend. Enough for accuracy against a missing-pixel rate.
#pragma once

#include <fmt/core.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tmm::cli {

struct plot_series {
    std::string name;
    std::vector<std::pair<double, double>> points;  // (x, y), drawn in this order
};

struct plot_axes {
    std::string title, x_label, y_label;
    double x_min = 0, x_max = 1, x_step = 0.1;
    double y_min = 0, y_max = 100, y_step = 10;
};

// Text content and attribute values with &, <, > and " escaped.
inline std::string xml_escape(std::string_view text) {
    std::string out;
    for (char c : text) {
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            default:
                out += c;
        }
    }
    return out;
}

inline std::string line_plot_svg(const plot_axes& axes, const std::vector<plot_series>& series) {
    constexpr double width = 720, height = 440;
    constexpr double left = 70, right = 150, top = 50, bottom = 60;  // margins
    constexpr double plot_w = width - left - right, plot_h = height - top - bottom;
    static constexpr const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c",
                                              "#ff7f0e", "#9467bd", "#8c564b"};
    // data -> pixel coordinates (y grows downwards in SVG)
    auto px = [&](double x) {
        return left + (x - axes.x_min) / (axes.x_max - axes.x_min) * plot_w;
    };
    auto py = [&](double y) {
        return top + plot_h - (y - axes.y_min) / (axes.y_max - axes.y_min) * plot_h;
    };

    std::string svg = fmt::format(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
        "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
        "<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n",
        width, height);
    svg +=
        fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
                    left + plot_w / 2, top / 2 + 5, xml_escape(axes.title));

    // grid lines, ticks and tick labels
    const int x_ticks = int((axes.x_max - axes.x_min) / axes.x_step + 0.5);
    for (int i = 0; i <= x_ticks; ++i) {
        const double x = axes.x_min + i * axes.x_step, at = px(x);
        svg += fmt::format(
            "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#e5e5e5\"/>\n"
            "<line x1=\"{0:.1f}\" y1=\"{2}\" x2=\"{0:.1f}\" y2=\"{3}\" stroke=\"black\"/>\n"
            "<text x=\"{0:.1f}\" y=\"{4}\" text-anchor=\"middle\">{5:g}</text>\n",
            at, top, top + plot_h, top + plot_h + 5, top + plot_h + 19, x);
    }
    const int y_ticks = int((axes.y_max - axes.y_min) / axes.y_step + 0.5);
    for (int i = 0; i <= y_ticks; ++i) {
        const double y = axes.y_min + i * axes.y_step, at = py(y);
        svg += fmt::format(
            "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#e5e5e5\"/>\n"
            "<line x1=\"{3}\" y1=\"{1:.1f}\" x2=\"{0}\" y2=\"{1:.1f}\" stroke=\"black\"/>\n"
            "<text x=\"{4}\" y=\"{5:.1f}\" text-anchor=\"end\">{6:g}</text>\n",
            left, at, left + plot_w, left - 5, left - 8, at + 4, y);
    }
    // axes and their labels
    svg += fmt::format(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\n",
        left, top, plot_w, plot_h);
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                       left + plot_w / 2, height - 15, xml_escape(axes.x_label));
    svg += fmt::format(
        "<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\" transform=\"rotate(-90 {0} {1})\">{2}"
        "</text>\n",
        20, top + plot_h / 2, xml_escape(axes.y_label));

    // one polyline with round markers per series, and its legend entry
    for (std::size_t s = 0; s < series.size(); ++s) {
        const char* colour = colours[s % std::size(colours)];
        std::string points;
        for (const auto& [x, y] : series[s].points)
            points += fmt::format("{}{:.1f},{:.1f}", points.empty() ? "" : " ", px(x), py(y));
        svg += fmt::format(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>\n", points,
            colour);
        for (const auto& [x, y] : series[s].points)
            svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"/>\n", px(x),
                               py(y), colour);
        const double ly = top + 10 + 20 * double(s), lx = left + plot_w + 15;
        svg += fmt::format(
            "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\" "
            "stroke-width=\"2\"/>\n"
            "<text x=\"{4}\" y=\"{5}\">{6}</text>\n",
            lx, ly, lx + 24, colour, lx + 30, ly + 4, xml_escape(series[s].name));
    }
    svg += "</svg>\n";
    return svg;
}

}  // namespace tmm::cli
