// How the CPU glue of the GmP families splits work with at::parallel_for.
#pragma once

#include <algorithm>
#include <cstdint>

namespace fastact::cpu {

// Elements per parallel task: enough to amortise a task, small enough to balance.
constexpr int64_t kTaskElements = 32768;

// The grain (items per task) for items of `elements_per_item` elements each.
inline int64_t grain_for(int64_t elements_per_item) {
  return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(1, elements_per_item));
}

}  // namespace fastact::cpu
