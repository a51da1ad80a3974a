// tmm: Tensorial Mixture Models as typed convolutional arithmetic circuits in log space.
// This header brings in the DSL, the model and the reference backend.
#pragma once

#include "backends/reference/reference.hpp"
#include "dsl/decompositions.hpp"
#include "dsl/network.hpp"
#include "dsl/pooling.hpp"
#include "model.hpp"
#include "observations.hpp"
#include "parameters.hpp"
#include "plan.hpp"
