"""Microphones and sound models: capture, log-mel features, input checks, ONNX verdicts.

Entry points:
- ``acoustic.training.train_acoustic_model`` -> build folder (model.onnx + manifest.json) for
  ``ModelRegistry.register``; needs ``onnx``, ``scikit-learn`` (classifier) and ``librosa``.
- ``acoustic.inspector.AcousticInspector(load_model(folder)).judge(waveform, rate)`` -> verdict.
- ``acoustic.sources.MicrophoneSource`` / ``WavFileSource``: ``record(seconds)`` per part,
  ``windows(window_s, hop_s)`` for continuous mode; ``acoustic.continuous.continuous`` adds
  the k-of-n alarm.
- ``acoustic.virtual_mic.VirtualMicrophone``: a PulseAudio null-sink microphone for tests/demos.

Imports only ``models`` and libraries (never the service, vision, HTTP or SQLite code).
"""
