"""Cheaper but equivalent forms of parts of a YOLO graph, for ONNX Runtime on the CPU.

The box decoder (DFL). The box head predicts each box side as a distribution over 16 bins; the decoder takes its
expectation: Softmax over the bins (axis 1 of [1, 16, 4, A]), then a 1x1 convolution with the bin indices as
weights. ONNX Runtime's CPU Softmax on an axis that is not the last one transposes the tensor around a last-axis
Softmax. At 640x480 that single node took 7.5 of 117 ms of the detector (one thread, `onnxruntime` profiling),
more than any convolution. The same numbers without it: the convolution is linear in its input channels and has
no bias, and the Softmax's denominator is the same for every channel at a position, so

    Conv(Softmax(x)) = Conv(e) / ReduceSum(e),   e = Exp(x - ReduceMax(x))        (reductions over axis 1)

which runs as strided reductions and one Exp, with no transposes: the detector is 5-7% faster at 640x480 and
960x736 and its outputs differ from the original's by float rounding (about 1e-4 px). It applies to graphs ONNX
Runtime runs whole: a split head (sparse_head.py) decodes its kept anchors in numpy.

Channel splits after a convolution. Each C3k2 block of the backbone and neck splits its first convolution's
output in two along the channels (Conv -> SiLU -> Split). ONNX Runtime runs convolutions in a blocked channel
layout (NCHWc) but has no blocked Split, so around each of these it converts the tensor to the plain layout and the
halves back: 21 + 27 reorder nodes, 5-6% of the trunk at 480x640 (one thread, profiling). A convolution's output
channels are independent of each other, so one convolution per part (its weights' and bias's rows for that part),
each with its own copy of the activation, computes the same numbers, and every tensor stays blocked: the network
with the split head is 1.07x faster at 480x640 and 1.02x at 736x960 (benchmarks/onnx_rewrite_speed.py).

Both are measured on the CPU and compute the same function on any execution provider; the ONNX Runtime backend
makes the second on its CPU provider only (it is about the CPU's layout). OpenVINO gains nothing from them, so it
loads the file as it is.
"""
from __future__ import annotations

SOFTMAX_AXIS = 1


def node_attribute(node, name: str, default):
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _linear_pointwise_conv(node, initializers) -> bool:
    """A Conv that is a plain linear map over channels: 1x1 kernel, stride 1, no padding, one group, no bias."""
    if node.op_type != "Conv" or (len(node.input) > 2 and node.input[2]):
        return False
    weight = initializers.get(node.input[1])
    if weight is None or len(weight.dims) != 4 or tuple(weight.dims[2:]) != (1, 1):
        return False
    return (node_attribute(node, "group", 1) == 1 and all(s == 1 for s in node_attribute(node, "strides", [1, 1]))
            and not any(node_attribute(node, "pads", [0, 0, 0, 0])) and node_attribute(node, "auto_pad", b"NOTSET")
            in (b"NOTSET", b"VALID"))


def _find_softmax_expectation(graph):
    """Node indices (Softmax, Conv) of the decoder: a Softmax over axis 1 whose only consumer is a linear 1x1 Conv;
    None when the graph has no such pair."""
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    graph_outputs = {output.name for output in graph.output}
    nodes = list(graph.node)
    for softmax_index, softmax in enumerate(nodes):
        if softmax.op_type != "Softmax" or node_attribute(softmax, "axis", -1) != SOFTMAX_AXIS:
            continue
        if softmax.output[0] in graph_outputs:
            continue
        consumers = [index for index, node in enumerate(nodes) if softmax.output[0] in node.input]
        if len(consumers) == 1 and _linear_pointwise_conv(nodes[consumers[0]], initializers):
            return softmax_index, consumers[0]
    return None


def _opset_version(model) -> int:
    """The default-domain opset the model imports (0 if none)."""
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)


def rewrite_softmax_expectation(model) -> bool:
    """Replace the decoder's Softmax + Conv by the Exp / ReduceSum form above, in place. Returns whether the graph
    had the pattern (other graphs are left as they are)."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    # Before opset 13, Softmax(axis=1) normalized over every axis from 1 on (the input flattened to 2-D): another
    # function, which this rewrite does not reproduce.
    opset = _opset_version(model)
    found = _find_softmax_expectation(graph) if opset >= 13 else None
    if found is None:
        return False
    softmax_index, conv_index = found
    softmax, conv = graph.node[softmax_index], graph.node[conv_index]
    x, prefix = softmax.input[0], (softmax.name or softmax.output[0]) + "/expectation"
    axes = prefix + "/axes"
    graph.initializer.append(numpy_helper.from_array(np.array([SOFTMAX_AXIS], np.int64), axes))
    exp, maximum = prefix + "/exp", prefix + "/max"
    # ReduceMax takes its axes as an input from opset 18, as an attribute before (ReduceSum: input from 13).
    reduce_max = (helper.make_node("ReduceMax", [x, axes], [maximum], name=maximum, keepdims=1) if opset >= 18 else
                  helper.make_node("ReduceMax", [x], [maximum], name=maximum, keepdims=1, axes=[SOFTMAX_AXIS]))
    replacement = [
        reduce_max,
        helper.make_node("Sub", [x, maximum], [prefix + "/shifted"], name=prefix + "/Sub"),
        helper.make_node("Exp", [prefix + "/shifted"], [exp], name=prefix + "/Exp"),
        helper.make_node("ReduceSum", [exp, axes], [prefix + "/sum"], name=prefix + "/sum", keepdims=1),
    ]
    expectation = conv.output[0]
    conv.input[0] = exp
    conv.output[0] = prefix + "/weighted"
    divide = helper.make_node("Div", [prefix + "/weighted", prefix + "/sum"], [expectation], name=prefix + "/Div")
    # Keep the node list topologically sorted: the new nodes where the Softmax was, the Div right after the Conv.
    nodes = list(graph.node)
    nodes = (nodes[:softmax_index] + replacement + nodes[softmax_index + 1:conv_index + 1] + [divide]
             + nodes[conv_index + 1:])
    del graph.node[:]
    graph.node.extend(nodes)
    return True


def inline_initializer_identities(model) -> int:
    """Make the users of an Identity of an initializer read the initializer itself, and drop the Identity, in place;
    returns how many were dropped. PyTorch's exporter writes such Identities when it stores equal tensors once
    (equal biases, as in a model with fresh weights); the rewrites here and the head split (sparse_head.py) look for
    weights among the initializers."""
    graph = model.graph
    initializers = {tensor.name for tensor in graph.initializer}
    graph_outputs = {output.name for output in graph.output}
    source = {node.output[0]: node.input[0] for node in graph.node
              if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in graph_outputs}
    if not source:
        return 0
    kept = [node for node in graph.node if not (node.op_type == "Identity" and node.output[0] in source)]
    for node in kept:
        for index, name in enumerate(node.input):
            if name in source:
                node.input[index] = source[name]
    del graph.node[:]
    graph.node.extend(kept)
    return len(source)


# Activations applied channel by channel, so that they commute with a channel split: one-input ops, and Mul of two
# tensors of the chain (SiLU's x * Sigmoid(x)).
_ELEMENTWISE = {"Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Mul"}


def _constant_value(name: str, initializers, producers):
    """The value of a tensor given as an initializer or by a Constant node, else None."""
    from onnx import numpy_helper

    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    node = producers.get(name)
    if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
        return numpy_helper.to_array(node.attribute[0].t)
    return None


def _split_sizes(split, channels: int, initializers, producers):
    """The channel count of each of a Split's outputs, or None when they cannot be read."""
    if len(split.input) > 1 and split.input[1]:
        sizes = _constant_value(split.input[1], initializers, producers)
        return None if sizes is None else [int(size) for size in sizes]
    sizes = node_attribute(split, "split", None)  # before opset 13
    if sizes:
        return [int(size) for size in sizes]
    parts = len(split.output)
    return [channels // parts] * parts if channels % parts == 0 else None


def _conv_and_chain(split, position, producers, consumers, initializers, graph_outputs):
    """(Conv, activation nodes in graph order) when the Split's input is a group-1 Conv with constant weights
    followed only by channel-wise activations, none of whose tensors is used outside that chain; else None.
    position: each node's index in the graph, by id()."""
    conv, chain, pending, seen = None, [], [split.input[0]], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producers.get(name)
        if node is None:  # a graph input or a constant inside the chain
            return None
        if node.op_type == "Conv" and conv is None:
            conv = node
        elif node.op_type in _ELEMENTWISE:
            chain.append(node)
            pending.extend(node.input)
        else:
            return None
    if conv is None or node_attribute(conv, "group", 1) != 1 or conv.input[1] not in initializers:
        return None
    if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in initializers:
        return None
    members = chain + [conv]
    for node in members:
        for output in node.output:
            if output in graph_outputs or any(all(user is not member for member in members) and user is not split
                                              for user in consumers.get(output, [])):
                return None
    return conv, sorted(chain, key=lambda node: position[id(node)])


def _per_part_nodes(conv, chain, split, sizes, weight, bias):
    """The Conv and activation copies computing each of the Split's outputs, and their initializers."""
    from onnx import helper, numpy_helper

    nodes, initializers, start = [], [], 0
    for part, (size, part_output) in enumerate(zip(sizes, split.output)):
        prefix = f"{conv.name or conv.output[0]}/part{part}"
        renamed = {split.input[0]: part_output}
        for name in [conv.output[0]] + [output for node in chain for output in node.output]:
            renamed.setdefault(name, f"{prefix}/{name}")
        conv_inputs = [conv.input[0], prefix + "/weight"]
        initializers.append(numpy_helper.from_array(weight[start:start + size], prefix + "/weight"))
        if bias is not None:
            initializers.append(numpy_helper.from_array(bias[start:start + size], prefix + "/bias"))
            conv_inputs.append(prefix + "/bias")
        for node in [conv] + chain:
            copy = helper.make_node(node.op_type, conv_inputs if node is conv else
                                    [renamed.get(name, name) for name in node.input],
                                    [renamed[name] for name in node.output],
                                    name=f"{prefix}/{node.name or node.output[0]}", domain=node.domain or None)
            copy.attribute.extend(node.attribute)
            nodes.append(copy)
        start += size
    return nodes, initializers


def split_channel_split_convs(model) -> int:
    """Replace each channel Split fed by a Conv and its activation with one Conv (and activation copy) per part,
    in place. Returns how many Splits were replaced (graphs without the pattern are left as they are)."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    graph_outputs = {output.name for output in graph.output}
    nodes = list(graph.node)
    position = {id(node): index for index, node in enumerate(nodes)}
    producers = {output: node for node in nodes for output in node.output}
    consumers = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    at_conv, removed, new_initializers, released = {}, set(), [], []
    for split in nodes:
        if split.op_type != "Split" or node_attribute(split, "axis", 0) not in (1, -3):
            continue
        found = _conv_and_chain(split, position, producers, consumers, initializers, graph_outputs)
        if found is None:
            continue
        conv, chain = found
        weight = numpy_helper.to_array(initializers[conv.input[1]])
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        bias = numpy_helper.to_array(initializers[conv.input[2]]) if has_bias else None
        sizes = _split_sizes(split, weight.shape[0], initializers, producers)
        if weight.ndim != 4 or sizes is None or sum(sizes) != weight.shape[0] or len(sizes) != len(split.output):
            continue
        # The copies go where the Conv was (its input is ready there); the Split's users come after the Split.
        at_conv[id(conv)], part_initializers = _per_part_nodes(conv, chain, split, sizes, weight, bias)
        new_initializers += part_initializers
        removed.update(id(node) for node in [conv, split] + chain)
        released += [name for name in list(conv.input[1:]) + list(split.input[1:]) if name]
    if not at_conv:
        return 0
    # The Conv's weights and the Split's sizes (initializers or Constants) go too, unless something else uses them.
    unused = {name for name in released if all(id(user) in removed for user in consumers[name])}
    removed.update(id(producers[name]) for name in unused if name in producers)
    rebuilt = []
    for node in nodes:
        rebuilt += at_conv.get(id(node), [])
        if id(node) not in removed:
            rebuilt.append(node)
    kept_initializers = [tensor for tensor in graph.initializer if tensor.name not in unused] + new_initializers
    del graph.node[:]
    graph.node.extend(rebuilt)
    del graph.initializer[:]
    graph.initializer.extend(kept_initializers)
    return len(at_conv)
