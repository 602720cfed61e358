"""gpu profile: per-item validation in front of the dali preprocess (logic in preprocess/validate.py).

A refused image fails only its own request, with the cpu preprocess's error text ("<code>: <why>"); the dali
backend downstream then only ever sees images it can decode.
"""

import triton_python_backend_utils as pb_utils

from preprocess.validate import ImageGate, PreprocessError, admit_rows
from triton_repo.runtime.params import model_config, parameters


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(model_config(args))
        self.gate = ImageGate(int(params["max_pixels"]))

    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "encoded_image").as_numpy()
            try:
                result = admit_rows(self.gate, rows)
            except Exception as exc:  # one request's problem, never the batch's
                result = PreprocessError("decode_failed", f"the image could not be read: {exc!r}")
            if isinstance(result, PreprocessError):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result))))
            else:
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("validated_image", result)]))
        return responses
