"""Turns text into the token ids of the variant's own open_clip tokenizer (not a re-implementation)."""

import numpy as np
import open_clip
import triton_python_backend_utils as pb_utils

from triton_repo.runtime.params import model_config, parameters


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(model_config(args))
        self.tokenizer = open_clip.get_tokenizer(params["variant"])
        self.context_length = int(params["context_length"])

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            texts = [t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t) for t in raw]
            tokens = self.tokenizer(texts, context_length=self.context_length).numpy().astype(np.int64)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("tokens", tokens)]))
        return responses
