// Safetensors, sha256 and bundle loading: valid files load without copying; every kind of
// corruption gives an edgevlm::Error with the right code and a message naming the problem.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "check.h"
#include "core/bundle.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/sha256.h"

using edgevlm::ErrorCode;
using nlohmann::json;

namespace {

std::string g_dir;

void write(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// A safetensors file from a header (serialized as is) and a data section.
std::string st_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string data_bytes(size_t n) {
  std::string d(n, '\0');
  for (size_t i = 0; i < n; ++i) d[i] = char(i * 7 + 1);
  return d;
}

// Header of two tensors: a F32 [2, 3] at [0, 24), b I8 [4] at [24, 28); 8-byte padded like Python's.
json good_header() {
  return {{"__metadata__", {{"format", "pt"}}},
          {"a", {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}}},
          {"b", {{"dtype", "I8"}, {"shape", {4}}, {"data_offsets", {24, 28}}}}};
}

std::string padded(std::string header) {
  while ((header.size() + 8) % 8 != 0) header += ' ';
  return header;
}

// Runs fn, which must throw edgevlm::Error with `code` and a message containing every fragment.
bool throws(ErrorCode code, const std::vector<std::string>& fragments, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const edgevlm::Error& e) {
    bool ok = e.code() == code;
    for (const auto& f : fragments) ok = ok && std::strstr(e.what(), f.c_str()) != nullptr;
    if (!ok) std::fprintf(stderr, "  got code %d: %s\n", int(e.code()), e.what());
    return ok;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "  unexpected exception: %s\n", e.what());
    return false;
  }
  std::fprintf(stderr, "  no exception\n");
  return false;
}

bool corrupt_file(const std::string& name, const std::string& bytes, ErrorCode code,
                  const std::vector<std::string>& fragments) {
  const std::string p = g_dir + "/" + name;
  write(p, bytes);
  auto frags = fragments;
  frags.push_back(name);
  const bool ok = throws(code, frags, [&] { edgevlm::SafeTensors::open(p); });
  if (!ok) std::fprintf(stderr, "  case %s\n", name.c_str());
  return ok;
}

void test_sha256() {
  CHECK(edgevlm::sha256_hex("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(edgevlm::sha256_hex("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  CHECK(edgevlm::sha256_hex(two.data(), two.size()) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // one million 'a', fed in uneven pieces
  edgevlm::Sha256 h;
  const std::string a(1001, 'a');
  for (int i = 0; i < 1000; ++i) h.update(a.data(), i % 2 ? 999 : 1001);
  CHECK(h.hexdigest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  write(g_dir + "/abc.txt", "abc");
  CHECK(edgevlm::sha256_file(g_dir + "/abc.txt") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(throws(ErrorCode::kIo, {"nope.txt"}, [] { edgevlm::sha256_file(g_dir + "/nope.txt"); }));
}

void test_valid_file() {
  const std::string p = g_dir + "/good.safetensors";
  write(p, st_bytes(padded(good_header().dump()), data_bytes(28)));
  const auto st = edgevlm::SafeTensors::open(p);
  CHECK(st.names().size() == 2 && st.names()[0] == "a" && st.names()[1] == "b");
  CHECK(st.metadata().at("format") == "pt");
  const auto& a = st.get("a");
  CHECK(a.dtype == edgevlm::DType::kF32 && a.shape == std::vector<int64_t>({2, 3}) && a.nbytes == 24 && a.numel() == 6);
  CHECK(a.data[0] == 1 && a.data[1] == 8);  // a view into the mapping
  const float* af = st.expect<float>("a", {2, 3});
  CHECK(reinterpret_cast<const uint8_t*>(af) == a.data);
  CHECK(st.expect<float>("a", {-1, 3}) == af);
  const int8_t* b = st.expect<int8_t>("b", {4});
  CHECK(b[3] == int8_t(3 * 7 + 1 + 24 * 7));
  // dtype and shape mismatches name file, key, expected vs got
  CHECK(throws(ErrorCode::kCorruptFile, {"good.safetensors", "'a'", "expected I32 [2, 3], got F32 [2, 3]"},
               [&] { st.expect<int32_t>("a", {2, 3}); }));
  CHECK(throws(ErrorCode::kCorruptFile, {"'a'", "expected F32 [3, 2], got F32 [2, 3]"}, [&] { st.expect<float>("a", {3, 2}); }));
  CHECK(throws(ErrorCode::kCorruptFile, {"'a'", "expected F32 [6]"}, [&] { st.expect<float>("a", {6}); }));
  CHECK(throws(ErrorCode::kCorruptFile, {"no tensor named 'zzz'"}, [&] { st.get("zzz"); }));
  CHECK(throws(ErrorCode::kCorruptFile, {"'b'", "expected F16"},
               [&] { st.expect<uint16_t>("b", edgevlm::DType::kF16, {4}); }));
  // a copy shares the mapping and outlives the original
  edgevlm::SafeTensors copy = st;
  CHECK(copy.get("a").data == a.data);
  // misaligned: an unpadded header puts 'a' at an odd address
  write(g_dir + "/odd.safetensors", st_bytes(good_header().dump() + " ", data_bytes(28)));
  const auto odd = edgevlm::SafeTensors::open(g_dir + "/odd.safetensors");
  if (reinterpret_cast<uintptr_t>(odd.get("a").data) % 4 != 0) {
    CHECK(throws(ErrorCode::kCorruptFile, {"not aligned"}, [&] { odd.expect<float>("a", {2, 3}); }));
  }
  CHECK(odd.expect<int8_t>("b", {4}) != nullptr);
  // empty file of tensors, zero-size tensor
  write(g_dir + "/empty_ok.safetensors", st_bytes("{}", ""));
  CHECK(edgevlm::SafeTensors::open(g_dir + "/empty_ok.safetensors").names().empty());
  json z = good_header();
  z["z"] = {{"dtype", "F32"}, {"shape", {0, 5}}, {"data_offsets", {28, 28}}};
  write(g_dir + "/zero.safetensors", st_bytes(padded(z.dump()), data_bytes(28)));
  CHECK(edgevlm::SafeTensors::open(g_dir + "/zero.safetensors").get("z").nbytes == 0);
}

void test_corrupt_files() {
  const std::string data = data_bytes(28);
  auto with = [&](const std::function<void(json&)>& edit) {
    json h = good_header();
    edit(h);
    return st_bytes(padded(h.dump()), data);
  };
  const std::string good = st_bytes(padded(good_header().dump()), data);
  CHECK(corrupt_file("empty.safetensors", "", ErrorCode::kCorruptFile, {"truncated"}));
  CHECK(corrupt_file("short.safetensors", "abc", ErrorCode::kCorruptFile, {"truncated"}));
  CHECK(corrupt_file("cut_header.safetensors", good.substr(0, 20), ErrorCode::kCorruptFile, {"truncated", "header claims"}));
  CHECK(corrupt_file("cut_data.safetensors", good.substr(0, good.size() - 1), ErrorCode::kCorruptFile,
                     {"'b'", "run past the data section"}));
  std::string huge = good;
  huge[7] = char(0x7f);  // header length ~ 9e18
  CHECK(corrupt_file("huge_len.safetensors", huge, ErrorCode::kCorruptFile, {"header length"}));
  CHECK(corrupt_file("bad_json.safetensors", st_bytes("{\"a\": [", data), ErrorCode::kCorruptFile, {"not valid JSON"}));
  CHECK(corrupt_file("not_object.safetensors", st_bytes("[1, 2]", data), ErrorCode::kCorruptFile, {"JSON object"}));
  CHECK(corrupt_file("entry.safetensors", with([](json& h) { h["a"] = 5; }), ErrorCode::kCorruptFile, {"'a'", "object"}));
  CHECK(corrupt_file("no_dtype.safetensors", with([](json& h) { h["a"].erase("dtype"); }), ErrorCode::kCorruptFile, {"dtype"}));
  CHECK(corrupt_file("dtype.safetensors", with([](json& h) { h["a"]["dtype"] = "F31"; }), ErrorCode::kUnsupported,
                     {"'a'", "unknown safetensors dtype 'F31'"}));
  CHECK(corrupt_file("shape_neg.safetensors", with([](json& h) { h["a"]["shape"] = {-2, -3}; }), ErrorCode::kCorruptFile,
                     {"non-negative"}));
  CHECK(corrupt_file("shape_type.safetensors", with([](json& h) { h["a"]["shape"] = "2x3"; }), ErrorCode::kCorruptFile, {"shape"}));
  CHECK(corrupt_file("shape_float.safetensors", with([](json& h) { h["a"]["shape"] = {2.5, 3}; }), ErrorCode::kCorruptFile,
                     {"non-negative integers"}));
  CHECK(corrupt_file("offsets_len.safetensors", with([](json& h) { h["a"]["data_offsets"] = {0}; }), ErrorCode::kCorruptFile,
                     {"[begin, end]"}));
  CHECK(corrupt_file("offsets_neg.safetensors", with([](json& h) { h["a"]["data_offsets"] = {-4, 20}; }),
                     ErrorCode::kCorruptFile, {"non-negative"}));
  CHECK(corrupt_file("begin_end.safetensors", with([](json& h) { h["a"]["data_offsets"] = {24, 0}; }), ErrorCode::kCorruptFile,
                     {"begin > end"}));
  CHECK(corrupt_file("past_end.safetensors", with([](json& h) { h["b"]["data_offsets"] = {28, 32}; }),
                     ErrorCode::kCorruptFile, {"'b'", "run past the data section (28 bytes)"}));
  CHECK(corrupt_file("past_end_huge.safetensors",
                     with([](json& h) { h["b"]["data_offsets"] = {uint64_t(1) << 63, (uint64_t(1) << 63) + 4}; }),
                     ErrorCode::kCorruptFile, {"'b'", "run past"}));
  CHECK(corrupt_file("size.safetensors", with([](json& h) { h["a"]["shape"] = {2, 4}; }), ErrorCode::kCorruptFile,
                     {"'a'", "needs 32 bytes", "hold 24"}));
  CHECK(corrupt_file("overflow.safetensors",
                     with([](json& h) { h["a"]["shape"] = {uint64_t(1) << 62, uint64_t(1) << 62, 4}; }),
                     ErrorCode::kCorruptFile, {"'a'", "too many"}));
  CHECK(corrupt_file("overlap.safetensors", with([](json& h) {
                       h["b"] = {{"dtype", "I8"}, {"shape", {4}}, {"data_offsets", {20, 24}}};
                     }),
                     ErrorCode::kCorruptFile, {"overlap"}));
  CHECK(corrupt_file("meta.safetensors", with([](json& h) { h["__metadata__"]["n"] = 3; }), ErrorCode::kCorruptFile,
                     {"__metadata__"}));
  CHECK(throws(ErrorCode::kIo, {"missing.safetensors"}, [] { edgevlm::SafeTensors::open(g_dir + "/missing.safetensors"); }));
  CHECK(throws(ErrorCode::kIo, {"not a regular file"}, [] { edgevlm::SafeTensors::open(g_dir); }));
  // Every truncation of a valid file is an error, never a crash.
  for (size_t n = 0; n < good.size(); ++n) {
    const std::string p = g_dir + "/trunc.safetensors";
    write(p, good.substr(0, n));
    bool threw = false;
    try {
      edgevlm::SafeTensors::open(p);
    } catch (const edgevlm::Error& e) {
      threw = e.code() == ErrorCode::kCorruptFile;
    }
    CHECK(threw);
  }
  // Every single-byte change of the header: an Error or a file that still validates.
  const std::string hdr = padded(good_header().dump());
  for (size_t i = 0; i < 8 + hdr.size(); ++i) {
    for (char c : {'\0', '9', '"', '}', '-', 'x'}) {
      std::string bytes = good;
      bytes[i] = c;
      try {
        const auto st = edgevlm::SafeTensors::from_buffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "mut");
        for (const auto& name : st.names()) {
          const auto& t = st.get(name);
          CHECK(t.data >= reinterpret_cast<const uint8_t*>(bytes.data()) &&
                t.data + t.nbytes <= reinterpret_cast<const uint8_t*>(bytes.data()) + bytes.size());
        }
      } catch (const edgevlm::Error&) {
      }
    }
  }
}

// A minimal bundle: manifest + tokenizer.json + weights/{model.safetensors, config.json}.
json make_bundle(const std::string& dir, const json& quant_config) {
  mkdir(dir.c_str(), 0755);
  mkdir((dir + "/weights").c_str(), 0755);
  write(dir + "/tokenizer.json", "{}");
  write(dir + "/weights/model.safetensors", st_bytes(padded(good_header().dump()), data_bytes(28)));
  json config = {{"model_type", "llama"}};
  if (!quant_config.is_null()) config["quantization_config"] = quant_config;
  write(dir + "/weights/config.json", config.dump());
  json files = json::object();
  for (const char* rel : {"tokenizer.json", "weights/model.safetensors", "weights/config.json"}) {
    files[rel] = edgevlm::sha256_file(dir + "/" + rel);
  }
  json m = {{"schema_version", 1}, {"family", "llama"}, {"text_config", json::object()},
            {"special_tokens", json::object()}, {"chat_template", nullptr}, {"chunk_size", 16},
            {"max_context", 256}, {"targets", json::object()}, {"files", files}};
  write(dir + "/manifest.json", m.dump());
  return m;
}

json quant_config() {
  return {{"quant_method", "edgevlm"},
          {"format_version", 1},
          {"layers",
           {{"layers.0.q", {{"scheme", "w4g32-sym"}, {"bits", 4}, {"group_size", 32}, {"symmetric", true},
                            {"shape", {64, 64}}, {"kind", "linear"}, {"algorithm", "gptq"}}},
            {"lm_head", {{"scheme", "w4g32-sym"}, {"kind", "tied_lm_head"}}}}}};
}

void test_bundle() {
  const std::string dir = g_dir + "/m.evlm";
  json m = make_bundle(dir, quant_config());
  {
    const auto b = edgevlm::Bundle::open(dir + "/", true);
    CHECK(b.family() == "llama" && b.has_weights() && b.quantized());
    CHECK(b.weights().names().size() == 2);
    const auto* q = b.quant_layer("layers.0.q");
    CHECK(q != nullptr && q->bits == 4 && q->group_size == 32 && q->symmetric && q->algorithm == "gptq" &&
          q->shape == std::vector<int64_t>({64, 64}));
    CHECK(b.quant_layer("lm_head")->kind == "tied_lm_head");
    CHECK(b.image_preprocessing() == nullptr);
  }
  auto rewrite = [&](const json& mm) { write(dir + "/manifest.json", mm.dump()); };
  // a tampered file
  write(dir + "/tokenizer.json", "{ }");
  CHECK(throws(ErrorCode::kCorruptFile, {"tokenizer.json", "sha256"}, [&] { edgevlm::Bundle::open(dir, true); }));
  CHECK(edgevlm::Bundle::open(dir, false).family() == "llama");  // without verification it loads
  write(dir + "/tokenizer.json", "{}");
  // a listed file that is missing
  json m2 = m;
  m2["files"]["weights/extra.bin"] = std::string(64, 'a');
  rewrite(m2);
  CHECK(throws(ErrorCode::kIo, {"weights/extra.bin", "missing"}, [&] { edgevlm::Bundle::open(dir, true); }));
  // entries pointing outside the bundle, bad digests
  for (const char* rel : {"../x", "/etc/passwd", "weights/../../x", "a//b"}) {
    json m3 = m;
    m3["files"][rel] = std::string(64, 'a');
    rewrite(m3);
    CHECK(throws(ErrorCode::kCorruptFile, {"outside the bundle"}, [&] { edgevlm::Bundle::open(dir, true); }));
  }
  json m4 = m;
  m4["files"]["tokenizer.json"] = "XYZ";
  rewrite(m4);
  CHECK(throws(ErrorCode::kCorruptFile, {"sha256"}, [&] { edgevlm::Bundle::open(dir, true); }));
  // missing keys, schema version, not JSON, not an object
  json m5 = m;
  m5.erase("family");
  m5.erase("targets");
  rewrite(m5);
  CHECK(throws(ErrorCode::kCorruptFile, {"missing keys family, targets"}, [&] { edgevlm::Bundle::open(dir, false); }));
  json m6 = m;
  m6["schema_version"] = 2;
  rewrite(m6);
  CHECK(throws(ErrorCode::kUnsupported, {"schema version 2"}, [&] { edgevlm::Bundle::open(dir, false); }));
  write(dir + "/manifest.json", "{\"schema_version\": ");
  CHECK(throws(ErrorCode::kCorruptFile, {"manifest.json", "not valid JSON"}, [&] { edgevlm::Bundle::open(dir, false); }));
  write(dir + "/manifest.json", "[]");
  CHECK(throws(ErrorCode::kCorruptFile, {"JSON object"}, [&] { edgevlm::Bundle::open(dir, false); }));
  rewrite(m);
  // corrupt weights inside a bundle, with and without verification
  write(dir + "/weights/model.safetensors", "xx");
  CHECK(throws(ErrorCode::kCorruptFile, {"model.safetensors", "sha256"}, [&] { edgevlm::Bundle::open(dir, true); }));
  CHECK(throws(ErrorCode::kCorruptFile, {"model.safetensors", "truncated"}, [&] { edgevlm::Bundle::open(dir, false); }));
  std::remove((dir + "/weights/model.safetensors").c_str());
  CHECK(throws(ErrorCode::kIo, {"model.safetensors", "missing"}, [&] { edgevlm::Bundle::open(dir, false); }));
  // quantization configs this runtime does not read
  json qc = quant_config();
  qc["quant_method"] = "gptq";
  make_bundle(dir, qc);
  CHECK(throws(ErrorCode::kUnsupported, {"quant_method 'gptq'"}, [&] { edgevlm::Bundle::open(dir, true); }));
  qc = quant_config();
  qc["layers"]["layers.0.q"]["bits"] = 3;
  make_bundle(dir, qc);
  CHECK(throws(ErrorCode::kUnsupported, {"3-bit"}, [&] { edgevlm::Bundle::open(dir, true); }));
  qc = quant_config();
  qc["layers"]["layers.0.q"].erase("group_size");
  make_bundle(dir, qc);
  CHECK(throws(ErrorCode::kCorruptFile, {"layers.0.q", "group_size"}, [&] { edgevlm::Bundle::open(dir, true); }));
  make_bundle(dir, nullptr);
  CHECK(!edgevlm::Bundle::open(dir, true).quantized());
  CHECK(throws(ErrorCode::kIo, {"no such bundle"}, [&] { edgevlm::Bundle::open(g_dir + "/nothing.evlm"); }));
  mkdir((g_dir + "/empty.evlm").c_str(), 0755);
  CHECK(throws(ErrorCode::kIo, {"manifest.json missing"}, [&] { edgevlm::Bundle::open(g_dir + "/empty.evlm"); }));
}

}  // namespace

int main() {
  char tmpl[] = "/tmp/edgevlm_test_safetensors_XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 2;
  g_dir = tmpl;
  test_sha256();
  test_valid_file();
  test_corrupt_files();
  test_bundle();
  const std::string cmd = "rm -rf '" + g_dir + "'";
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", g_dir.c_str());
  return edgevlm_test::finish("test_safetensors");
}
