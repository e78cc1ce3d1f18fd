package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AlertProviderKind is the kind of the AlertProvider resource.
const AlertProviderKind = "AlertProvider"

// Types of AlertProvider, the values of AlertProviderSpec.Type.
const (
	// AlertProviderSlack posts to Slack, through an incoming webhook
	// (address) or through chat.postMessage with a bot token and a channel.
	AlertProviderSlack = "slack"
	// AlertProviderWebhook posts a JSON document to address.
	AlertProviderWebhook = "webhook"
)

// Keys of the Secret an AlertProvider's secretRef names.
const (
	// SecretKeyAddress holds the address (webhook URL); it takes the place
	// of spec.address, which then needs not be written in the clear.
	SecretKeyAddress = "address"
	// SecretKeyToken holds a Slack bot token (xoxb-…) for chat.postMessage.
	SecretKeyToken = "token"
)

// AlertProvider says where and how weir sends the messages of the Canaries
// whose alerts refer to it.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=weir
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Channel",type=string,JSONPath=`.spec.channel`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AlertProvider struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec AlertProviderSpec `json:"spec"`
}

// AlertProviderSpec is the destination of an AlertProvider.
//
// +kubebuilder:validation:XValidation:rule="has(self.address) || has(self.secretRef)",message="an alert provider needs an address or a secretRef to a Secret holding 'address' (or, for slack, 'token')"
// +kubebuilder:validation:XValidation:rule="self.type == 'slack' || (!has(self.channel) && !has(self.username))",message="channel and username apply only to providers of type slack"
type AlertProviderSpec struct {
	// Type of the provider: slack or webhook.
	// +kubebuilder:validation:Enum=slack;webhook
	// +required
	Type string `json:"type"`

	// Channel to post to. A Slack incoming webhook posts to its own channel
	// when this is empty; chat.postMessage with a bot token needs it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=80
	// +optional
	Channel string `json:"channel,omitempty"`

	// Username the messages are posted as.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=80
	// +optional
	Username string `json:"username,omitempty"`

	// Address is the URL messages are posted to: a Slack incoming webhook,
	// the Slack Web API base URL when a token is used (for enterprise
	// gateways), or the URL of a generic webhook. The Secret's address key,
	// when present, takes precedence.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (self.startsWith('https://') || self.startsWith('http://'))",message="address must be an http:// or https:// URL"
	// +optional
	Address string `json:"address,omitempty"`

	// SecretRef names a Secret in the AlertProvider's namespace that holds
	// the key address (a URL) and/or token (a Slack bot token).
	// +optional
	SecretRef *LocalSecretReference `json:"secretRef,omitempty"`
}

// LocalSecretReference names a Secret in the same namespace.
type LocalSecretReference struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`
}

// +kubebuilder:object:root=true

// AlertProviderList is a list of AlertProviders.
type AlertProviderList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AlertProvider `json:"items"`
}

func init() {
	SchemeBuilder.Register(&AlertProvider{}, &AlertProviderList{})
}
