// edgevlm._native: the Python binding of the C++ runtime (api/session.h), mirroring the C API:
// Model.load -> Session(model) -> add_turn / add_tokens -> generate (token callback, cancel) ->
// stats. The GIL is released during compute. Runtime errors raise edgevlm._native.NativeError
// whose `code` is the C API's status name ("invalid_argument", "corrupt_file", ...).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "api/session.h"
#include "core/error.h"
#include "core/version.h"
#include "edgevlm/contract.h"
#include "edgevlm/edgevlm.h"

namespace py = pybind11;
using namespace edgevlm;

namespace {

// Every constant of contract.h by name, in the same shape as edgevlm.contract.as_dict().
py::dict contract_dict() {
  using namespace edgevlm::contract;
  py::dict d;
#define EDGEVLM_PUT_SCALAR(name, value) d[#name] = name;
#define EDGEVLM_PUT_LIST(name, ...) \
  d[#name] = std::vector<std::string>(std::begin(name), std::end(name));
  EDGEVLM_CONTRACT_INTS(EDGEVLM_PUT_SCALAR)
  EDGEVLM_CONTRACT_STRINGS(EDGEVLM_PUT_SCALAR)
  EDGEVLM_CONTRACT_LISTS(EDGEVLM_PUT_LIST)
#undef EDGEVLM_PUT_SCALAR
#undef EDGEVLM_PUT_LIST
  return d;
}

PyObject* g_native_error = nullptr;

// An image as a C-contiguous uint8 array [H, W, 3], kept alive while the turn runs.
struct ImageArg {
  py::array_t<uint8_t, py::array::c_style | py::array::forcecast> array;
};

ImageArg to_image(const py::handle& obj, size_t index) {
  auto arr = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(obj);
  if (!arr || arr.ndim() != 3 || arr.shape(2) != 3)
    throw Error(ErrorCode::kInvalidArgument, "image " + std::to_string(index) + ": expected a uint8 array [height, width, 3]");
  return {arr};
}

py::object json_loads(const std::string& s) { return py::module_::import("json").attr("loads")(s); }

// Image chunks viewing the arrays of `keep` (which must outlive them).
std::vector<InputChunk> image_chunks(const py::list& images, std::vector<ImageArg>& keep) {
  size_t i = 0;
  for (const auto& obj : images) keep.push_back(to_image(obj, i++));
  std::vector<InputChunk> chunks;
  for (const auto& im : keep) {
    InputChunk c;
    c.is_image = true;
    c.rgb = im.array.data();
    c.rgb_size = size_t(im.array.size());
    c.height = int(im.array.shape(0));
    c.width = int(im.array.shape(1));
    chunks.push_back(c);
  }
  return chunks;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "edgevlm C++ runtime binding";
  m.def("contract", &contract_dict, "Every bundle-contract constant of the C++ header, by name.");
  m.def("version", [] { return std::string(version()); });

  g_native_error = PyErr_NewException("edgevlm._native.NativeError", PyExc_RuntimeError, nullptr);
  m.attr("NativeError") = py::handle(g_native_error);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      py::object err = py::reinterpret_borrow<py::object>(g_native_error)(e.what());
      err.attr("code") = evlm_status_name(static_cast<evlm_status>(static_cast<int>(e.code())));
      PyErr_SetObject(g_native_error, err.ptr());
    }
  });

  py::class_<Model, std::shared_ptr<Model>>(m, "Model")
      .def_static(
          "load",
          [](const std::string& bundle, int threads, bool verify, const std::string& kernels, int chunk_size,
             int max_context) {
            ModelOptions o;
            o.threads = threads;
            o.verify_files = verify;
            o.kernels = kernels;
            o.chunk_size = chunk_size;
            o.max_context = max_context;
            py::gil_scoped_release release;
            return Model::load(bundle, o);
          },
          py::arg("bundle"), py::arg("threads") = 0, py::arg("verify") = true, py::arg("kernels") = "",
          py::arg("chunk_size") = 0, py::arg("max_context") = 0,
          "Load a NAME.evlm bundle's native target (sha256 of every file checked when verify).")
      .def_property_readonly("chunk_size", &Model::chunk_size)
      .def_property_readonly("max_context", &Model::max_context)
      .def_property_readonly("has_vision", &Model::has_vision)
      .def_property_readonly("eos_ids", &Model::eos_ids)
      .def_property_readonly("load_ms", &Model::load_ms)
      .def_property_readonly("family", [](const Model& mo) { return mo.bundle().family(); })
      .def("tokenize", [](const Model& mo, const std::string& text, bool add_special) {
        return mo.tokenizer().encode(text, add_special);
      }, py::arg("text"), py::arg("add_special") = false)
      .def("detokenize", [](const Model& mo, const std::vector<int32_t>& ids, bool skip_special) {
        return mo.tokenizer().decode(ids, skip_special);
      }, py::arg("ids"), py::arg("skip_special") = false)
      .def("render_turn", [](const Model& mo, const std::string& text, int n_images, bool first, bool use_template) {
        return mo.prompts().render_turn(text, n_images, first, use_template);
      }, py::arg("text"), py::arg("n_images") = 0, py::arg("first") = true, py::arg("use_template") = true)
      .def("turn_ids", [](const Model& mo, const std::string& text, const std::vector<std::array<int, 2>>& image_sizes,
                          bool first, bool use_template) {
        return mo.turn_ids(text, image_sizes, first, use_template);
      }, py::arg("text"), py::arg("image_sizes") = std::vector<std::array<int, 2>>(), py::arg("first") = true,
         py::arg("use_template") = true,
         "Prompt ids of one user turn as add_turn makes them; image_sizes: (width, height) of each image.")
      .def_property_readonly("image_token_id", [](const Model& mo) -> py::object {
        const PromptConfig& pc = mo.prompts().config();
        return pc.has_image_token ? py::object(py::int_(pc.image_token_id)) : py::object(py::none());
      })
      .def_property_readonly("bos_id", [](const Model& mo) -> py::object {
        const int32_t b = mo.prompts().config().bos_id;
        return b >= 0 ? py::object(py::int_(b)) : py::object(py::none());
      });

  py::class_<Session>(m, "Session")
      .def(py::init([](std::shared_ptr<Model> model) {
        py::gil_scoped_release release;
        return std::make_unique<Session>(std::move(model));
      }), py::arg("model"))
      .def("add_turn",
           [](Session& s, const std::string& text, const py::list& images, bool use_template) {
             std::vector<ImageArg> keep;
             std::vector<InputChunk> chunks = image_chunks(images, keep);
             chunks.push_back(InputChunk::of_text(text));
             py::gil_scoped_release release;
             s.add_turn(chunks, use_template);
           },
           py::arg("text"), py::arg("images") = py::list(), py::arg("use_template") = true,
           "One user turn (images as uint8 [H, W, 3] arrays), tokenized, encoded and prefilled.")
      .def("add_tokens", [](Session& s, const std::vector<int32_t>& ids, const py::list& images) {
        std::vector<ImageArg> keep;
        const std::vector<InputChunk> chunks = image_chunks(images, keep);
        py::gil_scoped_release release;
        s.add_tokens(ids, chunks);
      }, py::arg("ids"), py::arg("images") = py::list(),
         "Prompt ids prefilled as they are; the image-token rows take the images' features in order.")
      .def("truncate", [](Session& s, int n_tokens) {
        py::gil_scoped_release release;
        s.truncate(n_tokens);
      }, py::arg("n_tokens"), "Keep the first n_tokens of the history in the KV cache, forget the rest.")
      .def("score", [](Session& s, const std::vector<int32_t>& ids) {
        std::vector<float> out;
        {
          py::gil_scoped_release release;
          out = s.score(ids);
        }
        return py::array_t<float>(py::ssize_t(out.size()), out.data());
      }, py::arg("ids"),
      "Teacher-forced log p(ids[i + 1] | ids[..i]) [len(ids) - 1] from an empty cache (the session is reset).")
      .def("generate",
           [](Session& s, int max_new_tokens, float temperature, int top_k, float top_p, float repetition_penalty,
              uint64_t seed, bool ignore_eos, const py::object& on_token) {
             SamplingParams p;
             p.max_new_tokens = max_new_tokens;
             p.temperature = temperature;
             p.top_k = top_k;
             p.top_p = top_p;
             p.repetition_penalty = repetition_penalty;
             p.seed = seed;
             p.ignore_eos = ignore_eos;
             TokenCallback cb;
             if (!on_token.is_none())
               cb = [&](int32_t t, const std::string& piece) {
                 py::gil_scoped_acquire acquire;
                 py::object text = py::reinterpret_steal<py::object>(
                     PyUnicode_DecodeUTF8(piece.data(), py::ssize_t(piece.size()), "replace"));
                 py::object r = on_token(t, text);
                 return r.is_none() || py::bool_(r).cast<bool>();
               };
             py::gil_scoped_release release;
             return s.generate(p, cb);
           },
           py::arg("max_new_tokens") = 128, py::arg("temperature") = 0.0f, py::arg("top_k") = 0,
           py::arg("top_p") = 1.0f, py::arg("repetition_penalty") = 1.0f, py::arg("seed") = 0,
           py::arg("ignore_eos") = false, py::arg("on_token") = py::none(),
           "Generate from the last prefill; on_token(token, piece) -> False cancels. Returns the ids.")
      .def("cancel", &Session::cancel)
      .def("reset", [](Session& s) {
        py::gil_scoped_release release;
        s.reset();
      })
      .def_property_readonly("position", &Session::position)
      .def_property_readonly("history", &Session::history)
      .def_property_readonly("stats", [](const Session& s) { return json_loads(s.stats().to_json()); })
      .def_property_readonly("logits", [](const Session& s) {
        const auto& l = s.last_logits();
        return py::array_t<float>(py::ssize_t(l.size()), l.data());
      });
}
