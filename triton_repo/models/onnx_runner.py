"""cpu profile: runs one ONNX model (clip_image, clip_text, yolo) with ONNX Runtime.

The gpu profile serves the same ONNX files with Triton's onnxruntime backend; this wrapper only exists
because the embedded server ships the python backend alone. Requests grouped by the dynamic batcher run
as one ONNX Runtime call; if that call fails, each request is retried alone so one bad input fails only itself.
"""

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from triton_repo.runtime.batching import chunks, split_rows, stack_requests
from triton_repo.runtime.params import model_config, parameters


class TritonPythonModel:
    def initialize(self, args):
        config = model_config(args)
        params = parameters(config)
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.session_batch = int(params.get("session_batch", "0")) or None
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("threads", "1"))
        options.inter_op_num_threads = 1
        # yolo and clip_image run at the same time in separate stub processes: spin-waiting threads steal the
        # cores from each other (measured 1.2-2.2x slower ensembles on 2 cores, bench/results)
        options.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        self.session = ort.InferenceSession(params["onnx_path"], options, providers=["CPUExecutionProvider"])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        step = self.session_batch or len(batch) or 1
        parts = [self.session.run([self.output_name], {self.input_name: batch[s]})[0] for s in chunks(len(batch), step)]
        return np.concatenate(parts, axis=0)

    def _respond(self, array: np.ndarray):
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, array)])

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        try:
            batch, counts = stack_requests(arrays)
            return [self._respond(out) for out in split_rows(self._run(batch), counts)]
        except Exception:
            pass
        responses = []
        for array in arrays:
            try:
                responses.append(self._respond(self._run(array)))
            except Exception as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.input_name}: {exc}")))
        return responses
