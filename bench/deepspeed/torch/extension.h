#pragma once
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>
namespace torch { class Tensor; } // named by cpu_adam.h declarations only
