#[palisade::protocol]
trait Chat {
    #[event("typing")]
    async fn typing(self, payload: ());
}

fn main() {}
