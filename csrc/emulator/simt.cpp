// The scheduler of simt.h: fibers on reused stacks, one block at a time, the threads between
// barriers in the schedule's order, warp operations completed when all their lanes arrived.
#include "emulator/simt.h"

#include <c10/util/Exception.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

namespace fastact::simt {
namespace {

// ---- fibers ---------------------------------------------------------------------------------
// x86-64: a switch saves the callee-saved registers and the SSE / x87 control words on the old
// stack and pops them from the new one (no signal-mask syscall, unlike swapcontext).
#if defined(__x86_64__)
extern "C" void fastact_simt_switch(void** save_sp, void* load_sp);
extern "C" void fastact_simt_fiber_start();
asm(R"(
  .text
  .globl fastact_simt_switch
  .hidden fastact_simt_switch
  .type fastact_simt_switch, @function
fastact_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fastact_simt_switch, .-fastact_simt_switch

  .globl fastact_simt_fiber_start
  .hidden fastact_simt_fiber_start
  .type fastact_simt_fiber_start, @function
fastact_simt_fiber_start:
  movq %rbx, %rdi
  callq *%r12
  ud2
  .size fastact_simt_fiber_start, .-fastact_simt_fiber_start
)");

struct Context {
  void* sp = nullptr;
};

void switch_context(Context& from, Context& to) { fastact_simt_switch(&from.sp, to.sp); }

// A fresh fiber that calls entry(arg) on the stack [base, base + size): the frame the switch
// pops, returning into fastact_simt_fiber_start with rbx = arg and r12 = entry.
void make_context(Context& context, char* base, size_t size, void (*entry)(void*), void* arg) {
  auto* top = reinterpret_cast<uint64_t*>(
      (reinterpret_cast<uintptr_t>(base + size) & ~uintptr_t(15)));
  uint32_t control[2];
  asm volatile("stmxcsr %0" : "=m"(control[0]));
  asm volatile("fnstcw %0" : "=m"(control[1]));
  top[-1] = reinterpret_cast<uint64_t>(&fastact_simt_fiber_start);  // return address
  top[-2] = 0;                                                        // rbp
  top[-3] = reinterpret_cast<uint64_t>(arg);                         // rbx
  top[-4] = reinterpret_cast<uint64_t>(entry);                       // r12
  top[-5] = top[-6] = top[-7] = 0;                                   // r13, r14, r15
  std::memcpy(&top[-8], control, sizeof(control));
  context.sp = &top[-8];
}
#else
#error "the emulator's fibers switch x86-64 registers: build fastact._C_emulated on x86-64"
#endif

// 64 KiB per thread (the kernels keep a few hundred bytes of locals) above a guard page: an
// overflow faults instead of writing into the next thread's stack.
constexpr size_t kStackBytes = size_t(64) << 10;

struct Stack {
  char* base = nullptr;  // the usable part, above the guard page
  size_t page = 0;

  Stack() {
    page = size_t(sysconf(_SC_PAGESIZE));
    void* region = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    TORCH_CHECK(region != MAP_FAILED, "fastact cuda-emulated: cannot map a fiber stack");
    mprotect(region, page, PROT_NONE);
    base = static_cast<char*>(region) + page;
  }
  Stack(Stack&& other) noexcept : base(other.base), page(other.page) { other.base = nullptr; }
  Stack(const Stack&) = delete;
  ~Stack() {
    if (base != nullptr) munmap(base - page, kStackBytes + page);
  }
};

// ---- the state of a block's threads ---------------------------------------------------------

enum class State { runnable, at_barrier, at_warp_op, done };

struct Thread {
  Context context;
  State state = State::runnable;
  uint3 index{};
  WarpOp op = WarpOp::sync;
  unsigned mask = 0;
  int operand = 0, width = 0;
  size_t size = 0;
  alignas(16) unsigned char value[16];
  alignas(16) unsigned char result[16];
};

// What runs on this OS thread: the launch, the block, the fiber running now.
struct Emulator {
  std::vector<Stack> stacks;
  std::vector<Thread> threads;
  Context scheduler;
  Thread* current = nullptr;
  void (*body)(const void*) = nullptr;
  const void* body_arg = nullptr;
  std::exception_ptr failure;
  std::vector<unsigned char> dynamic_shared;
  uint64_t launches = 0;
};

thread_local Emulator emulator;

std::atomic<Schedule> g_schedule{Schedule::shuffled};
std::atomic<uint64_t> g_seed{0};

uint64_t mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct Random {
  uint64_t state;
  uint64_t next() { return state = mix(state); }
  template <typename T>
  void shuffle(std::vector<T>& items) {
    for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[next() % i]);
  }
};

void arrange(std::vector<int>& order, Schedule schedule, Random& random) {
  if (schedule == Schedule::reverse) {
    std::reverse(order.begin(), order.end());
  } else if (schedule == Schedule::shuffled) {
    random.shuffle(order);
  }
}

void fiber_main(void* arg) {
  Thread* self = static_cast<Thread*>(arg);
  try {
    emulator.body(emulator.body_arg);
  } catch (...) {
    emulator.failure = std::current_exception();
  }
  self->state = State::done;
  switch_context(self->context, emulator.scheduler);
  __builtin_unreachable();
}

// Leaves the fiber for the scheduler, which resumes it when its wait is over.
void yield(State waiting) {
  Thread* self = emulator.current;
  TORCH_CHECK(self != nullptr,
              "fastact cuda-emulated: a barrier or warp operation outside a kernel");
  self->state = waiting;
  switch_context(self->context, emulator.scheduler);
}

std::string describe(const LaunchConfig& config) {
  std::ostringstream out;
  out << "fastact cuda-emulated: kernel " << config.kernel << ", block (" << blockIdx.x << ", "
      << blockIdx.y << ", " << blockIdx.z << ") of " << config.block.x * config.block.y *
      config.block.z << " threads: ";
  return out.str();
}

std::string name(State state) {
  switch (state) {
    case State::at_barrier: return "waits at __syncthreads";
    case State::at_warp_op: return "waits at a warp operation";
    case State::done: return "has exited";
    default: return "is running";
  }
}

// The lane whose value lane `lane` receives (itself where the operation says so).
int source_lane(const Thread& t, int lane) {
  const int width = t.width;
  const int segment = lane & ~(width - 1);
  switch (t.op) {
    case WarpOp::shuffle: return segment | (t.operand & (width - 1));
    case WarpOp::shuffle_up: return (lane - segment) >= t.operand ? lane - t.operand : lane;
    case WarpOp::shuffle_down:
      return (lane - segment) + t.operand < width ? lane + t.operand : lane;
    case WarpOp::shuffle_xor: {
      const int source = lane ^ t.operand;
      return source < segment + width ? source : lane;
    }
    default: return lane;
  }
}

// Completes the warp operations whose lanes have all arrived; false if none could.
bool complete_warp_ops(const LaunchConfig& config, std::vector<Thread>& threads, int count) {
  bool progress = false;
  for (int first = 0; first < count; first += warpSize) {
    const int lanes = std::min(warpSize, count - first);
    for (int lane = 0; lane < lanes; ++lane) {
      const Thread& waiting = threads[first + lane];
      if (waiting.state != State::at_warp_op) continue;
      const unsigned mask = waiting.mask;
      const int width = waiting.width;
      TORCH_CHECK(width > 0 && width <= warpSize && (width & (width - 1)) == 0,
                  describe(config), "thread ", first + lane, ": warp width ", width,
                  " is not a power of two up to 32");
      TORCH_CHECK((mask >> lane) & 1u, describe(config), "thread ", first + lane,
                  " calls a warp operation with a mask (0x", std::hex, mask, std::dec,
                  ") that leaves out its own lane ", lane);
      for (int other = 0; other < warpSize; ++other) {
        if (!((mask >> other) & 1u)) continue;
        TORCH_CHECK(other < lanes, describe(config), "the mask 0x", std::hex, mask, std::dec,
                    " of warp ", first / warpSize, " names lane ", other,
                    ", which the block does not have");
        const Thread& t = threads[first + other];
        TORCH_CHECK(t.state == State::at_warp_op, describe(config), "thread ", first + lane,
                    " waits at a warp operation (mask 0x", std::hex, mask, std::dec,
                    ") that thread ", first + other, " never reaches: it ", name(t.state),
                    " (divergent warp operation: a deadlock on the device)");
        TORCH_CHECK(t.mask == mask && t.op == waiting.op && t.width == width &&
                        t.size == waiting.size,
                    describe(config), "threads ", first + lane, " and ", first + other,
                    " of one warp wait at different warp operations (or masks)");
      }
      unsigned votes = 0;
      for (int other = 0; other < lanes; ++other) {
        if (!((mask >> other) & 1u)) continue;
        int predicate;
        std::memcpy(&predicate, threads[first + other].value, sizeof(predicate));
        if (predicate != 0) votes |= 1u << other;
      }
      for (int other = 0; other < lanes; ++other) {
        if (!((mask >> other) & 1u)) continue;
        Thread& t = threads[first + other];
        unsigned vote = 0;
        switch (t.op) {
          case WarpOp::ballot: vote = votes; break;
          case WarpOp::any: vote = votes != 0; break;
          case WarpOp::all: vote = votes == mask; break;
          case WarpOp::sync: break;
          default: {
            const int source = source_lane(t, other);
            TORCH_CHECK((mask >> source) & 1u, describe(config), "thread ", first + other,
                        " reads lane ", source, " outside the shuffle's mask 0x", std::hex,
                        mask, std::dec, " (undefined on the device)");
            std::memcpy(t.result, threads[first + source].value, t.size);
          }
        }
        if (t.op == WarpOp::ballot || t.op == WarpOp::any || t.op == WarpOp::all) {
          std::memcpy(t.result, &vote, sizeof(vote));
        }
      }
      for (int other = 0; other < lanes; ++other) {
        if ((mask >> other) & 1u) threads[first + other].state = State::runnable;
      }
      progress = true;
    }
  }
  return progress;
}

void run_block(const LaunchConfig& config, Schedule schedule, Random& random) {
  Emulator& e = emulator;
  const int count = int(config.block.x * config.block.y * config.block.z);
  for (int i = 0; i < count; ++i) {
    Thread& t = e.threads[i];
    t.state = State::runnable;
    t.index = {i % config.block.x, (i / config.block.x) % config.block.y,
               i / (config.block.x * config.block.y)};
    make_context(t.context, e.stacks[i].base, kStackBytes, &fiber_main, &t);
  }
  if (!e.dynamic_shared.empty()) {
    std::memset(e.dynamic_shared.data(), 0xff, e.dynamic_shared.size());
  }
  std::vector<int> order;
  order.reserve(count);
  while (true) {
    order.clear();
    for (int i = 0; i < count; ++i) {
      if (e.threads[i].state == State::runnable) order.push_back(i);
    }
    if (!order.empty()) {
      arrange(order, schedule, random);
      for (int i : order) {
        Thread& t = e.threads[i];
        e.current = &t;
        threadIdx = t.index;
        switch_context(e.scheduler, t.context);
        e.current = nullptr;
        if (e.failure) std::rethrow_exception(std::exchange(e.failure, nullptr));
      }
      continue;
    }
    if (complete_warp_ops(config, e.threads, count)) continue;
    int done = 0, at_barrier = 0;
    for (int i = 0; i < count; ++i) {
      done += e.threads[i].state == State::done;
      at_barrier += e.threads[i].state == State::at_barrier;
    }
    if (done == count) return;
    if (at_barrier == count) {
      for (int i = 0; i < count; ++i) e.threads[i].state = State::runnable;
      continue;
    }
    // Some threads wait at __syncthreads that others will never reach.
    int waiting = 0, missing = 0;
    while (e.threads[waiting].state != State::at_barrier) ++waiting;
    while (e.threads[missing].state == State::at_barrier) ++missing;
    TORCH_CHECK(false, describe(config), "thread ", waiting, " waits at __syncthreads, which ",
                "thread ", missing, " never reaches: it ", name(e.threads[missing].state),
                " (a barrier in divergent code: a deadlock or undefined on the device)");
  }
}

}  // namespace

void set_schedule(Schedule schedule, uint64_t seed) {
  g_schedule = schedule;
  g_seed = seed;
}
Schedule current_schedule() { return g_schedule; }
uint64_t current_seed() { return g_seed; }

const char* schedule_name(Schedule schedule) {
  switch (schedule) {
    case Schedule::forward: return "forward";
    case Schedule::reverse: return "reverse";
    default: return "shuffled";
  }
}

void warp_exchange(WarpOp op, unsigned mask, const void* value, size_t size, int operand,
                   int width, void* result) {
  Thread* self = emulator.current;
  TORCH_CHECK(self != nullptr, "fastact cuda-emulated: a warp operation outside a kernel");
  self->op = op;
  self->mask = mask;
  self->operand = operand;
  self->width = width;
  self->size = size;
  std::memcpy(self->value, value, size);
  yield(State::at_warp_op);
  std::memcpy(result, self->result, op == WarpOp::ballot || op == WarpOp::any ||
                                            op == WarpOp::all ? sizeof(unsigned) : size);
}

void block_barrier() { yield(State::at_barrier); }

void* dynamic_shared_memory() {
  TORCH_CHECK(emulator.current != nullptr,
              "fastact cuda-emulated: dynamic shared memory outside a kernel");
  return emulator.dynamic_shared.empty() ? nullptr : emulator.dynamic_shared.data();
}

void run_grid(const LaunchConfig& config, void (*thread_body)(const void*), const void* body) {
  Emulator& e = emulator;
  TORCH_CHECK(e.body == nullptr, "fastact cuda-emulated: a launch from inside a kernel");
  const dim3 g = config.grid, b = config.block;
  const uint64_t threads = uint64_t(b.x) * b.y * b.z;
  TORCH_CHECK(threads >= 1 && threads <= 1024 && b.z <= 64, "fastact cuda-emulated: kernel ",
              config.kernel, ": invalid block (", b.x, ", ", b.y, ", ", b.z,
              "): 1 to 1024 threads, z at most 64");
  TORCH_CHECK(g.x >= 1 && g.x <= 0x7fffffffu && g.y >= 1 && g.y <= 65535 && g.z >= 1 &&
                  g.z <= 65535,
              "fastact cuda-emulated: kernel ", config.kernel, ": invalid grid (", g.x, ", ",
              g.y, ", ", g.z, ")");
  TORCH_CHECK(config.shared_bytes <= (size_t(227) << 10), "fastact cuda-emulated: kernel ",
              config.kernel, ": ", config.shared_bytes,
              " bytes of dynamic shared memory (a block has at most 227 KiB)");
  while (e.stacks.size() < threads) e.stacks.emplace_back();
  if (e.threads.size() < threads) e.threads.resize(threads);
  e.dynamic_shared.assign(config.shared_bytes, 0xff);

  const Schedule schedule = g_schedule;
  Random random{mix(g_seed.load() ^ mix(++e.launches))};
  const uint64_t blocks = uint64_t(g.x) * g.y * g.z;
  std::vector<uint64_t> block_order(blocks);
  for (uint64_t i = 0; i < blocks; ++i) block_order[i] = i;
  // Blocks are independent: their order is the schedule's too.
  if (schedule == Schedule::reverse) {
    std::reverse(block_order.begin(), block_order.end());
  } else if (schedule == Schedule::shuffled) {
    random.shuffle(block_order);
  }

  gridDim = g;
  blockDim = b;
  e.body = thread_body;
  e.body_arg = body;
  try {
    for (uint64_t linear : block_order) {
      blockIdx = {unsigned(linear % g.x), unsigned((linear / g.x) % g.y),
                  unsigned(linear / (uint64_t(g.x) * g.y))};
      run_block(config, schedule, random);
    }
  } catch (...) {
    e.body = nullptr;
    e.current = nullptr;
    throw;
  }
  e.body = nullptr;
}

}  // namespace fastact::simt
