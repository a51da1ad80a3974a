// The published HT model as a user program compiles it: the typed expression lowered to a
// plan, inference and training steps on the CPU backend. bench/compile-time times the
// compilation of this file with the build's own flags (target: <= 30 s).
#include <tmm/backends/cpu/cpu.hpp>
#include <tmm/dsl/decompositions.hpp>
#include <tmm/model.hpp>
#include <tmm/train/train.hpp>

#include <vector>

// Class log-likelihoods of a batch under the published model.
std::vector<float> published_ht_log_likelihoods(const tmm::parameters<float>& theta,
                                                const tmm::observations<float>& x) {
    static const tmm::plan p = tmm::make_plan(tmm::published_ht);
    return tmm::backends::cpu::log_likelihoods(p, theta, x);
}

// The published recipe from scratch: GMM fit, Dirichlet weights, Nadam training.
void published_ht_fit(tmm::parameters<float>& theta, const tmm::labelled_images& images,
                      const tmm::training_options& options) {
    const tmm::model<decltype(tmm::published_ht)> model;
    tmm::fit<tmm::backends::cpu>(model.structure(), theta, images, options);
}
