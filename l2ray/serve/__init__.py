"""The Ray Serve graph: OpenAI-compatible Ingress -> ReasoningController -> Generator."""
