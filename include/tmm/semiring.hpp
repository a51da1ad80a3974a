// The two ways an upward pass can combine a conv layer's inputs: summing the probabilities of
// the children (the likelihood, logsumexp in log space) or keeping the most probable child
// (max in log space, for the most probable explanation).
#pragma once

namespace tmm {

enum class semiring { sum_product, max_product };

}  // namespace tmm
