// The generation subcommands of `tmm`: sample, inpaint and visualise. main.cpp registers
// them with add_generation_commands and runs the chosen one with run_generation.
#pragma once

#include <CLI/CLI.hpp>

#include <vector>

namespace tmm::cli {

// Adds the subcommands to `app`; returns them (for options they share with the others).
std::vector<CLI::App*> add_generation_commands(CLI::App& app);

// Runs `chosen` if it is a generation subcommand and returns its exit code; -1 otherwise.
int run_generation(const CLI::App* chosen);

}  // namespace tmm::cli
